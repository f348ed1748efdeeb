"""Fixtures for the corpus: the cases (written once per session), the oracle model store, an embedded-mode API with
the corpus' limits, and a started DICOM listener on the same kind of job store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.corpus import build_corpus
from tests.corpus.model import Case
from tests.corpus.request_cases import MAX_UPLOAD_BYTES, MAX_UPLOAD_FILES, ZIP_MAX_RATIO


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    cases = build_corpus(tmp_path_factory.mktemp("corpus"))
    return {c.name: c for c in cases}


@pytest.fixture(scope="session")
def corpus_model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The oracle bundle (promoted): labels by intensity, inference in milliseconds; no accuracy claim."""
    from tests.bundle_factory import build_oracle_bundle

    store = tmp_path_factory.mktemp("corpus_model_store")
    build_oracle_bundle(store, promote=True)
    return store


@pytest.fixture(scope="module")
def corpus_client(tmp_path_factory: pytest.TempPathFactory, corpus_model_store: Path) -> Iterator:
    """A TestClient on one embedded-mode app for the whole module (the server must survive every case)."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from tests.service.conftest import make_settings

    settings = make_settings(
        tmp_path_factory.mktemp("corpus_jobs"),
        corpus_model_store,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_upload_files=MAX_UPLOAD_FILES,
        zip_max_ratio=ZIP_MAX_RATIO,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
