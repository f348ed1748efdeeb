"""The job store: atomic records, the idempotency index under concurrency, retention and stall clean-up, and the
runner's guards (finished jobs, jobs run elsewhere, the redelivery cap)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from service.config import Settings
from service.errors import ErrorCode
from service.jobs.ingest import describe_paths
from service.jobs.models import JobRecord, JobState, utc_now
from service.jobs.store import JobNotFound, JobStore
from service.worker.runner import run_job


def _job(store: JobStore, key: str = "k", **fields) -> JobRecord:
    staging = store.new_staging()
    (staging / "input").mkdir()
    (staging / "input" / "000001.dcm").write_bytes(b"x")
    record = JobRecord(
        id=uuid.uuid4().hex,
        owner="alice",
        model="oracle:1.0.0",
        series_instance_uid="1.2.3",
        idempotency_key=key,
        **fields,
    )
    return store.create_from_staging(staging, record)


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs").prepare()


def test_records_are_replaced_atomically(store):
    job = _job(store)
    for n in range(20):
        store.update(job.id, progress=n / 20, stage=f"s{n}")
    assert store.get(job.id).stage == "s19"
    assert sorted(p.name for p in store.job_path(job.id).iterdir()) == [".lock", "input", "job.json", "output"]
    with pytest.raises(JobNotFound):
        store.get("../../etc/passwd")
    with pytest.raises(JobNotFound):
        store.get(uuid.uuid4().hex)


def test_one_winner_per_idempotency_key(store):
    jobs = [_job(store) for _ in range(8)]
    results: list[str | None] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def claim(i: int) -> None:
        barrier.wait()
        results[i] = store.claim_key("samekey", jobs[i].id) or "WON"

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("WON") == 1
    winner = jobs[results.index("WON")].id
    assert all(r in ("WON", winner) for r in results)
    assert store.find_by_key("samekey").id == winner

    store.fail(winner, "X", "failed")  # a failed job gives its key up to a new submission
    newcomer = _job(store)
    assert store.claim_key("samekey", newcomer.id) is None
    store.delete(newcomer.id)  # deletion drops the index entry
    assert store.find_by_key("samekey") is None


def test_retention_and_stall_cleanup(store):
    old_done = _job(store, key="a")
    store.update(old_done.id, state=JobState.SUCCEEDED, finished_at=utc_now() - timedelta(days=8))
    recent_done = _job(store, key="b")
    store.update(recent_done.id, state=JobState.FAILED, finished_at=utc_now())
    orphan = _job(store, key="c", state=JobState.RUNNING)  # its worker died: nobody holds the run lock
    alive = _job(store, key="d", state=JobState.RUNNING)
    abandoned = store.new_staging()
    os.utime(abandoned, (time.time() - 2 * 86400,) * 2)
    later = utc_now() + timedelta(hours=3)
    with store.run_lock(alive.id) as acquired:
        assert acquired
        counts = store.cleanup(retention_s=7 * 86400, stall_s=3600, now=later)
    assert counts == {"deleted": 1, "stalled": 1, "staging": 1, "index": 0}
    assert not store.exists(old_done.id) and store.exists(recent_done.id)
    stalled = store.get(orphan.id)
    assert stalled.state == JobState.FAILED and stalled.error.code == ErrorCode.STALLED
    assert not store.input_dir(orphan.id).exists()
    assert store.get(alive.id).state == JobState.RUNNING
    assert not abandoned.exists()


def test_runner_guards(store, tmp_path):
    settings = Settings(job_dir=store.root, model_store=tmp_path / "no-models", max_redeliveries=1)
    done = _job(store, key="a", state=JobState.SUCCEEDED)
    assert run_job(store, settings, done.id) is None  # a redelivered finished job is left alone
    busy = _job(store, key="b")
    with store.run_lock(busy.id):
        assert run_job(store, settings, busy.id) is None  # another process runs it
    assert store.get(busy.id).attempts == 0
    lost = _job(store, key="c", state=JobState.RUNNING, attempts=2)  # started twice, worker lost twice
    assert run_job(store, settings, lost.id) == JobState.FAILED
    assert store.get(lost.id).error.code == ErrorCode.WORKER_LOST
    assert run_job(store, settings, uuid.uuid4().hex) is None  # deleted job
    broken = _job(store, key="d")  # the model store is empty: the job fails with the pipeline's code
    assert run_job(store, settings, broken.id) == JobState.FAILED
    record = store.get(broken.id)
    assert record.error.code == "MODEL_NOT_FOUND" and record.attempts == 1


def test_messages_name_uploaded_files(tmp_path):
    folder = tmp_path / "staging" / "abc"
    names = {"input/000002.dcm": "CT.1.2.dcm", "reference.dcm": "rs.dcm"}
    msg = f"{folder}/input/000002.dcm and {folder}/input/000009.dcm: bad; {folder}/reference.dcm: not RTSTRUCT"
    assert describe_paths(msg, folder, names) == "'CT.1.2.dcm' and input/000009.dcm: bad; 'rs.dcm': not RTSTRUCT"
