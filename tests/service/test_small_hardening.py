"""Issue 16.9: a multipart boundary over 256 characters is a 400 BAD_UPLOAD (was a 500); a Redis that accepts
connections but never answers gives 503 BROKER_UNAVAILABLE within PAROTID_BROKER_TIMEOUT_S, not after kombu's
socket timeout and retries."""

from __future__ import annotations

import socket
import threading

import pytest

from service.errors import ErrorCode
from service.jobs.dispatch import DispatchUnavailable
from tests.service.conftest import KEY_ALICE, auth, make_settings


@pytest.mark.parametrize("length", [257, 1000])
def test_overlong_multipart_boundary_is_bad_upload(embedded_client, length):
    boundary = "b" * length
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.dcm"\r\n\r\nx\r\n--{boundary}--\r\n'
    )
    r = embedded_client.post(
        "/v1/jobs",
        content=body.encode(),
        headers={**auth(KEY_ALICE), "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "BAD_UPLOAD" and "boundary" in r.json()["error"]["message"]


def test_silent_redis_gives_503_within_the_broker_timeout(tmp_path, model_store):
    """A TCP server that accepts and never answers: the submit must end (DispatchUnavailable) well before kombu's
    10 s socket timeout; the join bound (4 x the 1 s broker timeout) is a correctness bound, not a benchmark."""
    from service.worker.celery_app import CeleryDispatcher

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    settings = make_settings(
        tmp_path / "jobs", model_store, broker_url=f"redis://127.0.0.1:{port}/0", broker_timeout_s=1.0
    )
    dispatcher = CeleryDispatcher(settings)
    outcome: list[BaseException | None] = []

    def submit() -> None:
        try:
            dispatcher.submit("0" * 32)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    t = threading.Thread(target=submit, daemon=True)
    t.start()
    t.join(timeout=4.0)
    try:
        assert not t.is_alive(), "the submit was still waiting for the silent broker"
        (exc,) = outcome
        assert isinstance(exc, DispatchUnavailable) and exc.code == ErrorCode.BROKER_UNAVAILABLE
    finally:
        silent.close()
