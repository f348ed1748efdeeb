"""Redis outage (our own redis-server on a free port, not the shared one): new jobs get 503 with a clear message,
/readyz reports it, nothing is left behind, and the API recovers by itself when Redis is back."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.conftest import require_tool
from tests.service.conftest import KEY_ALICE, auth, make_settings, write_phantom_series
from tests.support.net import free_port


class RedisServer:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [
                require_tool("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture
def own_redis(tmp_path: Path):
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_outage_503_then_recovery(own_redis, tmp_path, model_store, ct_series):
    import redis

    url = f"redis://127.0.0.1:{own_redis.port}/0"
    settings = make_settings(
        tmp_path / "jobs", model_store, broker_url=url, queue_name="outage-test", broker_timeout_s=1.0
    )
    other = write_phantom_series(tmp_path / "other")
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        first = client.post("/v1/jobs", files=ct_series.parts(), headers=auth(KEY_ALICE))
        assert first.status_code == 202, first.text

        own_redis.stop()
        down = client.post("/v1/jobs", files=other.parts(), headers=auth(KEY_ALICE))
        assert down.status_code == 503, down.text
        error = down.json()["error"]
        assert error["code"] == "BROKER_UNAVAILABLE"
        assert f"127.0.0.1:{own_redis.port}" in error["message"] and "not reachable" in error["message"]
        assert int(down.headers["retry-after"]) > 0
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["queue"]["ok"] is False and ready.json()["ready"] is False
        assert client.get("/healthz").status_code == 200  # alive, just not ready
        store = client.app.state.jobs.store
        assert [p.name for p in store.jobs_dir.iterdir()] == [first.json()["id"]]  # the refused job left nothing

        own_redis.start()  # same port, empty (no persistence): the API reconnects by itself
        assert client.get("/readyz").status_code == 200
        back = client.post("/v1/jobs", files=other.parts(), headers=auth(KEY_ALICE))
        assert back.status_code == 202, back.text  # not "existing": the refused submission left no index entry
        assert redis.Redis.from_url(url).llen("outage-test") == 1
        metrics = client.get("/metrics", headers=auth(KEY_ALICE)).text
        assert 'parotid_jobs_submitted_total{result="unavailable"} 1.0' in metrics
        assert "parotid_queue_depth 1.0" in metrics
