"""``JobService``, the Python API the DICOM listener uses (no HTTP): submit a folder, wait, read the outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from service.errors import InputError
from service.jobs.models import JobState
from service.jobs.service import JobService
from service.jobs.store import JobNotFound
from service.worker.dispatcher import make_dispatcher
from tests.service.conftest import make_settings


def test_submit_series_from_a_folder(tmp_path: Path, model_store: Path, ct_series):
    jobs = JobService.from_settings(make_settings(tmp_path / "jobs", model_store), make_dispatcher)
    try:
        spool = tmp_path / "spool"
        shutil.copytree(ct_series.folder, spool)
        result = jobs.submit_series(spool, owner="dicom:SCANNER1", move=True)
        assert result.created and result.job.owner == "dicom:SCANNER1" and result.job.n_files == 48
        assert list(spool.iterdir()) == []  # moved, not copied
        record = jobs.wait(result.job.id, timeout_s=120, poll_s=0.1)
        assert record.state == JobState.SUCCEEDED, record
        assert pydicom.dcmread(jobs.output_path(record.id, "rtstruct")).Modality == "RTSTRUCT"
        assert jobs.output_path(record.id, "qa").is_file() and jobs.output_path(record.id, "preview").is_file()

        again = jobs.submit_series(ct_series.files, owner="dicom:SCANNER1")  # a list of files, copied
        assert not again.created and again.job.id == record.id
        assert all(p.exists() for p in ct_series.files)
        with pytest.raises(JobNotFound):
            jobs.get_job(record.id, owner="someone-else")
        assert [r.id for r in jobs.list_jobs(owner="dicom:SCANNER1")] == [record.id]

        junk = tmp_path / "junk"
        junk.mkdir()
        (junk / "readme.txt").write_text("not DICOM")
        with pytest.raises(InputError) as err:
            jobs.submit_series(junk, owner="dicom:SCANNER1")
        assert err.value.code == "EMPTY_INPUT"
        assert list(jobs.store.staging_dir.iterdir()) == []
    finally:
        jobs.close()


def test_full_embedded_queue_refuses_and_keeps_nothing(tmp_path: Path, model_store: Path, ct_series):
    from service.jobs.dispatch import DispatchUnavailable
    from tests.service.conftest import write_phantom_series

    jobs = JobService.from_settings(
        make_settings(tmp_path / "jobs", model_store, embedded_queue_max=1), make_dispatcher, start=False
    )
    first = jobs.submit_series(ct_series.folder, owner="alice")  # waits: the pool is not started
    other = write_phantom_series(tmp_path / "other")
    with pytest.raises(DispatchUnavailable) as err:
        jobs.submit_series(other.folder, owner="alice")
    assert err.value.code == "QUEUE_FULL" and "PAROTID_EMBEDDED_QUEUE_MAX" in err.value.message
    assert [r.id for r in jobs.list_jobs()] == [first.job.id]
    assert jobs.dispatcher.queue_depth() == 1
    jobs.close()
