"""Celery mode: the listener submits through the service's CeleryDispatcher (real Redis), a real
``parotid-seg worker`` subprocess runs the job from the shared job store, and the listener delivers the result."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pydicom

from tests.dicom_factory import TEST_PATIENT_ID, TEST_PATIENT_NAME
from tests.listener.conftest import SCANNER_AE, audit, storescu
from tests.service.conftest import SESSION_QUEUE, clean_env, require_redis
from tests.support.net import wait_for


def test_listener_in_celery_mode_with_a_worker_subprocess(
    tmp_path: Path, model_store: Path, make_series, storescp_factory
):
    from service.config import Settings
    from service.jobs.service import JobService
    from service.listener.jobs import ServiceJobBackend
    from service.listener.listener import Listener
    from service.listener.settings import load_settings
    from service.worker.dispatcher import make_dispatcher

    url = require_redis()
    queue = f"{SESSION_QUEUE}-listener-{uuid.uuid4().hex[:6]}"
    job_dir = tmp_path / "jobs"
    env = clean_env() | {
        "PAROTID_BROKER_URL": url,
        "PAROTID_QUEUE_NAME": queue,
        "PAROTID_JOB_DIR": str(job_dir),
        "PAROTID_MODEL_STORE": str(model_store),
        "PYTHONUNBUFFERED": "1",
    }
    script = Path(sys.executable).with_name("parotid-seg")
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]
    log_path = tmp_path / "worker.log"
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [*cli, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = JobService.from_settings(
        Settings(job_dir=job_dir, model_store=model_store, broker_url=url, queue_name=queue), make_dispatcher
    )
    tps = storescp_factory("TPS")
    settings = load_settings(
        spool_dir=tmp_path / "spool",
        port=0,
        bind_host="127.0.0.1",
        quiet_time_s=1.0,
        release_grace_s=0.3,
        poll_interval_s=0.2,
        peers=[{"ae_title": SCANNER_AE, "return_mode": "sender", "return_port": tps.port, "return_ae_title": "TPS"}],
    )
    listener = Listener(settings, ServiceJobBackend(service)).start(port=0)
    try:
        series = make_series()
        assert storescu(listener.port, series.files).returncode == 0
        (rtstruct,) = wait_for(tps.received, 180, "the RTSTRUCT computed by the Celery worker")
        assert pydicom.dcmread(rtstruct).Modality == "RTSTRUCT"
        (submitted,) = audit(listener, "job_submitted")
        record = service.get_job(submitted["job_id"])
        assert record.dispatcher == "celery" and record.state == "succeeded" and record.n_files == 48
    finally:
        listener.stop()
        service.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        import redis

        redis.Redis.from_url(url).delete(queue)
    text = log_path.read_text(errors="replace")
    assert f"job {submitted['job_id']}: succeeded" in text
    for secret in (TEST_PATIENT_NAME, TEST_PATIENT_ID, "Secretname"):
        assert secret not in text and secret not in listener.audit.path.read_text()
