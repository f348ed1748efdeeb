"""The adapter to the service's JobService: submission, polling, and the retention clean-up a listener-only
installation runs (``maintenance``), against the real job store and embedded dispatcher."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from service.errors import InputError
from service.listener.jobs import ServiceJobBackend, owner_for_ae


def test_owner_for_ae_is_a_valid_owner_name():
    assert owner_for_ae("CT1") == "dicom:CT1"
    assert owner_for_ae(" CT SCAN#1 ") == "dicom:CT_SCAN_1"


def test_submit_poll_and_retention_cleanup(tmp_path: Path, model_store: Path, make_series):
    from service.config import Settings
    from service.jobs.models import utc_now
    from service.jobs.service import JobService
    from service.worker.dispatcher import make_dispatcher

    service = JobService.from_settings(
        Settings(
            job_dir=tmp_path / "jobs", model_store=model_store, broker_url=None, cleanup_interval_s=1, retention_s=60
        ),
        make_dispatcher,
    )
    backend = ServiceJobBackend(service)
    try:
        series = make_series()
        sub = backend.submit(series.folder, series_uid=series.series_uid, model=None, owner="dicom:CT1")
        assert not sub.existing and not any(series.folder.iterdir())  # the files were taken over (moved)
        deadline = time.monotonic() + 120
        while not (view := backend.poll(sub.job_id)).done:
            assert time.monotonic() < deadline, "job did not finish"
            time.sleep(0.2)
        assert view.state == "succeeded" and view.rtstruct_path is not None and view.rtstruct_path.is_file()

        empty = tmp_path / "empty"
        empty.mkdir()
        with pytest.raises(InputError) as err:  # a folder without DICOM files is refused with the service's code
            backend.submit(empty, series_uid=None, model=None, owner="dicom:CT1")
        assert err.value.code == "EMPTY_INPUT"

        service.store.update(sub.job_id, finished_at=utc_now() - timedelta(seconds=3600))
        backend._last_cleanup = time.monotonic()
        backend.maintenance()  # within PAROTID_CLEANUP_INTERVAL_S of the last round: nothing happens yet
        assert service.get_job(sub.job_id).state == "succeeded"
        time.sleep(1.1)
        backend.maintenance()
        assert backend.poll(sub.job_id).error_code == "JOB_NOT_FOUND"
    finally:
        backend.close()
