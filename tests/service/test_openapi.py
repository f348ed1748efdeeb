"""The OpenAPI schema exercised by schemathesis (bounded): no 5xx, and every response conforms to the documented
status codes, content types and response schemas."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.app import create_app
from tests.service.conftest import KEY_ALICE, auth, make_settings


@pytest.fixture
def api_schema(tmp_path: Path, model_store: Path):
    app = create_app(make_settings(tmp_path / "jobs", model_store, max_upload_bytes=2**20, max_upload_files=20))
    app.state.jobs.start()  # the lifespan is not run by schemathesis' ASGI transport
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    app.state.jobs.close()


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_openapi_no_server_errors(api_schema, mode):
    """Every operation, 10 generated requests each, valid (positive) and invalid (negative) data. Schemathesis'
    pytest plugin does not support pytest 9's lazy fixtures, so the cases are drawn with Hypothesis directly."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9
    checks = CHECKS if mode == GenerationMode.POSITIVE else [not_a_server_error, status_code_conformance]
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(
            max_examples=10, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        def exercise(case) -> None:
            statuses[case.call_and_validate(headers=auth(KEY_ALICE), checks=checks).status_code] += 1

        try:
            exercise()
        except Unsatisfiable:  # negative mode: an operation without inputs has nothing to break
            assert mode == GenerationMode.NEGATIVE
    assert sum(statuses.values()) >= 50 and all(code < 500 for code in statuses), statuses


def test_openapi_documents_versioned_schemas(api_schema):
    raw = api_schema.raw_schema
    assert set(raw["paths"]) >= {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/rtstruct",
        "/v1/jobs/{job_id}/qa",
        "/v1/jobs/{job_id}/preview.png",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    body = raw["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["files"] and body["properties"]["files"]["items"]["format"] == "binary"
    for name in ("JobResponse", "ErrorResponse", "ModelsResponse", "ReadyResponse"):
        assert "schema_version" in raw["components"]["schemas"][name]["properties"]
    assert raw["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
