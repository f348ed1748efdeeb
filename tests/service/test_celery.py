"""Celery mode against a real Redis and real ``parotid-seg worker`` subprocesses: submit, poll, fetch; a worker
SIGKILLed mid-job loses nothing (the job is redelivered, finishes once, one RTSTRUCT); no patient name or ID in
the worker's log."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.jobs.models import JobState
from service.jobs.store import JobStore
from tests.dicom_factory import TEST_PATIENT_ID, TEST_PATIENT_NAME
from tests.service.conftest import (
    KEY_ALICE,
    SESSION_QUEUE,
    auth,
    clean_env,
    key_entries,
    make_settings,
    require_redis,
    wait_for_job,
)

# Short limits so a redelivery happens within the test: soft 30 s, hard 35 s, visibility 40 s.
LIMITS = {"job_time_limit_s": 30, "hard_limit_grace_s": 5, "visibility_timeout_s": 40}


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("parotid-seg")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


class Worker:
    """A ``parotid-seg worker`` in its own process group (so SIGKILL takes the pool child with it)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*_cli(), "worker"], env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 30) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def celery_env(tmp_path: Path, model_store: Path):
    url = require_redis()
    queue = f"{SESSION_QUEUE}-{uuid.uuid4().hex[:6]}"
    settings = make_settings(tmp_path / "jobs", model_store, broker_url=url, queue_name=queue, **LIMITS)
    env = clean_env() | {
        "PAROTID_BROKER_URL": url,
        "PAROTID_QUEUE_NAME": queue,
        "PAROTID_JOB_DIR": str(settings.job_dir),
        "PAROTID_MODEL_STORE": str(model_store),
        "PAROTID_API_KEYS": key_entries(),
        "PYTHONUNBUFFERED": "1",
        **{f"PAROTID_{k.upper()}": str(v) for k, v in LIMITS.items()},
    }
    workers: list[Worker] = []

    def start_worker(name: str) -> Worker:
        w = Worker(env, tmp_path / f"worker-{name}.log")
        workers.append(w)
        return w

    yield settings, start_worker
    for w in workers:
        w.kill(signal.SIGTERM)
    import redis

    redis.Redis.from_url(url).delete(queue)


def _unacked_for(url: str, queue: str) -> int:
    """Messages of ``queue`` delivered to a worker and not yet acknowledged (kombu's ``unacked`` hash)."""
    import redis

    r = redis.Redis.from_url(url)
    return sum(1 for v in r.hvals("unacked") if json.loads(v)[2] == queue)


def _wait_acked(url: str, queue: str, timeout_s: float = 15) -> None:
    """The job record says succeeded a moment before the worker acknowledges the message."""
    deadline = time.monotonic() + timeout_s
    while _unacked_for(url, queue):
        assert time.monotonic() < deadline, "the task was never acknowledged"
        time.sleep(0.1)


def test_celery_submit_poll_fetch(celery_env, ct_series):
    settings, start_worker = celery_env
    worker = start_worker("a")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()
        assert ready["mode"] == "celery" and ready["checks"]["queue"]["ok"] is True, ready
        r = client.post("/v1/jobs", files=ct_series.parts(), headers=auth(KEY_ALICE))
        assert r.status_code == 202, r.text
        done = wait_for_job(client, r.json()["id"], KEY_ALICE, timeout_s=150)
        assert done["state"] == "succeeded" and done["qa_status"] == "ok" and done["attempts"] == 1, done
        rs = client.get(done["links"]["rtstruct"], headers=auth(KEY_ALICE))
        assert rs.status_code == 200 and pydicom.dcmread(io.BytesIO(rs.content)).Modality == "RTSTRUCT"
        again = client.post("/v1/jobs", files=ct_series.parts(), headers=auth(KEY_ALICE))
        assert again.status_code == 200 and again.json()["id"] == done["id"]
    _wait_acked(settings.broker_url, settings.queue_name)
    worker.kill(signal.SIGTERM)
    log = worker.text()
    assert f"job {done['id']}: succeeded" in log
    for secret in (TEST_PATIENT_NAME, TEST_PATIENT_ID, "Secretname"):
        assert secret not in log


def test_sigkill_mid_job_is_redelivered_and_finishes_once(celery_env, ct_series):
    settings, start_worker = celery_env
    store = JobStore(settings.job_dir)
    first = start_worker("first")
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/jobs", files=ct_series.parts(), headers=auth(KEY_ALICE))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 90
        while store.get(job_id).stage in (None, "starting", "read"):  # the input is read before the model loads
            assert time.monotonic() < deadline, f"the job never started: {first.text()[-2000:]}"
            time.sleep(0.05)
        first.kill(signal.SIGKILL)  # the worker and its pool child, mid-job (loading TensorFlow and the model)
        killed = store.get(job_id)
        assert killed.state == JobState.RUNNING and killed.stage == "load_model" and killed.completions == 0, killed
        assert _unacked_for(settings.broker_url, settings.queue_name) == 1  # Redis still holds the message

        second = start_worker("second")
        done = wait_for_job(client, job_id, KEY_ALICE, timeout_s=180)
        assert done["state"] == "succeeded", (done, second.text()[-3000:])
        assert done["attempts"] == 2
        record = store.get(job_id)
        assert record.completions == 1
        outputs = sorted(p.name for p in (store.job_path(job_id) / "output").iterdir())
        assert outputs == ["preview.png", "qa.json", "rtstruct.dcm", "uncertainty.nii.gz"]  # no partial files
        assert client.get(done["links"]["rtstruct"], headers=auth(KEY_ALICE)).status_code == 200
    _wait_acked(settings.broker_url, settings.queue_name)  # acknowledged: it will not be delivered again
    second.kill(signal.SIGTERM)
    logs = first.text() + second.text()
    assert logs.count(f"job {job_id}: succeeded") == 1
    assert f"job {job_id}: started (attempt 2 of 3)" in second.text()
