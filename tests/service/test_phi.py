"""No value from a data set, and no uploaded file name, in logs or long-lived records (issue 16.7).

- pydicom's validation warnings echo malformed values (``Invalid value for VR DA: 'ZZTOP...'``): reading a series
  (API door, worker) and receiving it at the listener must not log or warn with them;
- the upload's file names (often patient names) must not stay in the job folder (manifest.json) or in a failed
  job's message;
- the staging folder of an upload interrupted by a crash is removed at the next start.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
from pydicom.encaps import encapsulate, generate_frames

from service.jobs.models import JobState
from service.jobs.service import JobService
from service.jobs.store import JobStore
from service.worker.dispatcher import make_dispatcher
from tests import dicom_variants as dv
from tests.corpus.series_cases import write_series
from tests.service.conftest import make_settings

SECRET = "ZZTOPSECRET"
BAD_VALUES = {
    "PatientBirthDate": f"{SECRET}1",  # DA
    "StudyTime": f"{SECRET}2",  # TM
    "PatientSex": f"{SECRET.lower()}3",  # CS: lower case
    "AccessionNumber": f"{SECRET}4" * 3,  # SH of 36 characters (at most 16)
}


def malformed_series(folder: Path) -> list[Path]:
    files = write_series(folder)
    dv.set_attrs(files, **BAD_VALUES)
    return files


def test_reading_a_series_with_malformed_values_logs_and_warns_none_of_them(tmp_path, caplog):
    from service.pipeline.series import load_series

    malformed_series(tmp_path / "ct")
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ct = load_series(tmp_path / "ct")
    assert ct.shape_zyx[0] == 20
    text = caplog.text + "\n".join(str(w.message) for w in caught)
    assert SECRET not in text and SECRET.lower() not in text


def test_listener_receives_malformed_values_without_logging_them(tmp_path):
    """The listener as its own process (``parotid-seg listen``'s code), DEBUG logging to stderr."""
    from tests.listener.conftest import free_port, storescu, wait_for

    files = malformed_series(tmp_path / "ct")
    port = free_port()
    code = f"""
import logging, sys, time, warnings
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
logging.captureWarnings(True)
warnings.simplefilter("always")
from pathlib import Path
from service.listener.audit import AuditLog
from service.listener.scp import StorageHandlers, build_ae, start_server
from service.listener.settings import load_settings
from service.listener.spool import Spool
from service.listener.tracker import SeriesTracker
root = Path(sys.argv[1])
settings = load_settings(spool_dir=root, port={port}, bind_host="127.0.0.1", min_free_disk_mb=0,
                         peers=[{{"ae_title": "SCANNER", "return_mode": "none"}}])
handlers = StorageHandlers(Spool(root), SeriesTracker(30, 5, 600, 3600), AuditLog(root / "audit.jsonl"))
server = start_server(build_ae(settings), settings, handlers)
time.sleep(60)
"""
    log = tmp_path / "listener.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "spool")],
            cwd=Path(__file__).resolve().parents[2],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: storescu(port, files[:1]).returncode == 0, 30, "the listener to start")
        assert storescu(port, files[1:]).returncode == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)
    out, err = "", log.read_text(errors="replace")
    assert len(list((tmp_path / "spool").rglob("*.dcm"))) == 20
    assert "C-STORE" in err or "Association" in err or "DEBUG" in err  # the log was on
    assert SECRET not in out + err and SECRET.lower() not in out + err


def test_upload_names_do_not_stay_with_the_job_or_in_its_failure(tmp_path, model_store):
    """A series whose slice fails to decode in the worker: the failure names the stored file, not the upload's."""
    files = write_series(tmp_path / "ct")
    dv.compress(files, "rle")

    def scramble(ds: pydicom.Dataset) -> None:
        frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
        frame[0:4] = (5).to_bytes(4, "little")
        ds.PixelData = encapsulate([bytes(frame)])

    dv.edit(files[7], scramble)
    named = tmp_path / "named"
    named.mkdir()
    for n, f in enumerate(files):
        shutil.copy(f, named / f"Secretname^Patient_{n}.dcm")
    jobs = JobService.from_settings(make_settings(tmp_path / "jobs", model_store), make_dispatcher)
    try:
        sub = jobs.submit_series(named, owner="alice")
        folder = jobs.store.job_path(sub.job.id)
        assert not (folder / "manifest.json").exists()
        record = jobs.wait(sub.job.id, timeout_s=120, poll_s=0.1)
        assert record.state == JobState.FAILED and record.error is not None
        assert record.error.code == "PIXEL_DATA_ERROR"
        assert "Secretname" not in record.error.message and "input/" in record.error.message
        assert not any("Secretname" in p.read_text(errors="ignore") for p in folder.rglob("*.json"))
    finally:
        jobs.close()


def test_upload_interrupted_by_a_crash_is_removed_at_the_next_start(tmp_path):
    root = tmp_path / "jobs"
    code = f"""
import os
from pathlib import Path
from service.jobs.store import JobStore
store = JobStore(Path({str(root)!r})).prepare()
staging = store.new_staging()
(staging / "input").mkdir()
(staging / "input" / "000001.dcm").write_bytes(b"patient data")
os._exit(9)  # the API process dies mid-upload
"""
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=False, timeout=60)
    assert len(list((root / "staging").iterdir())) == 1
    store = JobStore(root)
    live = store.prepare().new_staging()  # this process's own upload in progress
    JobStore(root).prepare()  # another process starting
    assert list((root / "staging").iterdir()) == [live]
