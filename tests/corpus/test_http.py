"""Every corpus case over HTTP, against one embedded-mode app: the documented status and error code, never a 5xx,
the server still answers, and nothing half-written in the job store (no staging leftovers, no temporary files, no
job folder for a refused upload, all or none of the outputs for an accepted one, inputs removed when it ends)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service.jobs.models import INPUT_DIR, OUTPUT_DIR
from tests.corpus import CASE_NAMES
from tests.corpus.checks import ALL_OUTPUTS, store_leftovers
from tests.corpus.model import AUTH_KEY, Case
from tests.corpus.request_cases import EVIL_NAME
from tests.service.conftest import KEY_ALICE, auth

JOB_TIMEOUT_S = 120.0


def send(client, case: Case):
    call = case.http
    headers: dict[str, str] = {}
    if call.auth == AUTH_KEY:
        headers.update(auth(KEY_ALICE))
    elif call.auth is not None:
        headers["Authorization"] = call.auth
    if call.content is not None or call.stream is not None:
        if call.content_type:
            headers["Content-Type"] = call.content_type
        body = call.content if call.content is not None else call.stream()  # type: ignore[misc]
        return client.post("/v1/jobs", content=body, headers=headers)
    return client.post("/v1/jobs", files=call.files, data=call.data, headers=headers)


def wait_done(client, job_id: str) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        body = client.get(f"/v1/jobs/{job_id}", headers=auth(KEY_ALICE)).json()
        if body["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _idle_after(corpus_client):
    """After each case (even a failed one) wait until no job is queued or running: cases must not overlap."""
    yield
    jobs = corpus_client.app.state.jobs
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while any(not r.state.terminal for r in jobs.list_jobs()) and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_http_case(name: str, corpus: dict[str, Case], corpus_client) -> None:
    case = corpus[name]
    store = corpus_client.app.state.jobs.store
    jobs_before = {p.name for p in store.jobs_dir.iterdir()}

    r = send(corpus_client, case)

    want = case.http_expect
    assert r.status_code < 500, r.text
    assert r.status_code == want.status, r.text
    body = r.json()
    assert body["schema_version"] == "1"
    assert corpus_client.get("/healthz").status_code == 200  # the server still answers
    new_jobs = {p.name for p in store.jobs_dir.iterdir()} - jobs_before
    if want.status == 202:
        assert new_jobs == {body["id"]}
        done = wait_done(corpus_client, body["id"])
        assert done["state"] == want.job, done
        assert (done["error"] or {}).get("code") == want.code, done
        folder = store.job_path(body["id"])
        outputs = sorted(p.name for p in (folder / OUTPUT_DIR).iterdir())
        assert outputs == (ALL_OUTPUTS if want.job == "succeeded" else [])
        assert not (folder / INPUT_DIR).exists()  # inputs are removed when the job ends
        if want.job == "succeeded":
            rs = corpus_client.get(done["links"]["rtstruct"], headers=auth(KEY_ALICE))
            assert rs.status_code == 200 and rs.headers["content-type"] == "application/dicom"
        else:
            assert done["error"]["message"] and str(folder) not in done["error"]["message"]
    else:
        assert body["error"]["code"] == want.code, body
        assert body["error"]["message"]
        assert str(store.root) not in body["error"]["message"]  # no server paths in messages
        assert new_jobs == set()  # a refused upload leaves no job
    assert store_leftovers(store.root) == []
    assert not list(Path("/tmp").glob(f"{EVIL_NAME}*")) and not list(store.root.rglob(f"{EVIL_NAME}*"))


def test_corpus_is_large_and_mostly_dicom_shaped(corpus: dict[str, Case]) -> None:
    assert len(corpus) >= 30
    both = [c for c in corpus.values() if c.dicom is not None]
    assert len(both) >= 30
