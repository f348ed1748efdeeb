"""Fixtures for the service tests: a model store with the oracle bundle, a small phantom CT series, settings with
two API keys, an embedded-mode API client, and ``require_redis()`` (skips locally, fails in CI when missing)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.dicom_factory import write_ct_series
from tests.support.zips import zip_files

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_TEST_DB = 13  # not the default DB: tests never touch other users' keys
SESSION_QUEUE = f"parotid-test-{uuid.uuid4().hex[:8]}"

KEY_ALICE = "alice-secret-key-0123456789"
KEY_BOB = "bob-secret-key-9876543210"
ORACLE_SPEC = "oracle:1.0.0"
SERIES_SHAPE_ZYX = (48, 64, 64)
SERIES_SPACING_MM_ZYX = (2.5, 4.0, 4.0)


def require_redis() -> str:
    """The test Redis URL (DB 13 on 127.0.0.1:6379); skip locally / fail in CI when Redis does not answer."""
    import redis

    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
    except Exception:
        missing(f"Redis at {REDIS_HOST}:{REDIS_PORT} (.ci/run starts one)")
    return url


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def key_entries() -> str:
    from service.config import hash_api_key

    return f"alice={hash_api_key(KEY_ALICE)},bob={hash_api_key(KEY_BOB)}"


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with the oracle bundle (promoted: labels by intensity, so the outputs are known)."""
    from tests.bundle_factory import build_oracle_bundle

    store = tmp_path_factory.mktemp("model_store")
    build_oracle_bundle(store, promote=True)
    return store


@dataclass
class Series:
    folder: Path
    files: list[Path]

    def parts(self) -> list[tuple[str, tuple[str, bytes, str]]]:
        return [("files", (p.name, p.read_bytes(), "application/dicom")) for p in self.files]

    def zip_bytes(self) -> bytes:
        return zip_files(self.files)


def write_phantom_series(folder: Path, **kwargs) -> Series:
    from tests.bundle_factory import oracle_phantom

    hu, _ = oracle_phantom(SERIES_SHAPE_ZYX)
    files = write_ct_series(folder, hu, SERIES_SPACING_MM_ZYX, (-126.0, -126.0, -60.0), "HFS", **kwargs)
    return Series(folder, files)


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    """The oracle phantom (48 x 64 x 64 at 2.5 x 4 x 4 mm, HFS) as a CT series with the test patient's name/ID."""
    return write_phantom_series(tmp_path_factory.mktemp("ct"))


def make_settings(job_dir: Path, model_store: Path, **overrides):
    from service.config import Settings

    values = dict(
        job_dir=job_dir,
        model_store=model_store,
        api_keys=key_entries(),
        min_free_disk_bytes=0,
        max_upload_bytes=64 * 2**20,
        max_upload_files=500,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def embedded_client(tmp_path: Path, model_store: Path) -> Iterator:
    """A TestClient on an embedded-mode app (no broker) with keys for alice and bob."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    settings = make_settings(tmp_path / "jobs", model_store)
    with TestClient(create_app(settings)) as client:
        yield client


def wait_for_job(client, job_id: str, key: str, timeout_s: float = 120.0) -> dict:
    """Poll GET /v1/jobs/{id} until succeeded or failed; fails the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = client.get(f"/v1/jobs/{job_id}", headers=auth(key))
        assert r.status_code == 200, r.text
        body = r.json()
        if body["state"] in ("succeeded", "failed"):
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {body['state']} after {timeout_s} s: {body}")
        time.sleep(0.2)


def clean_env() -> dict[str, str]:
    """The environment without PAROTID_* settings of the caller (subprocesses get only what a test sets)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PAROTID_") or k == "PAROTID_SHARED_DIR"}
