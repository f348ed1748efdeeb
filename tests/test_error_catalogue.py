"""The error catalogue (service/errors.py) is complete, consistent with its raisers, and documented.

Every code raised anywhere in the source (``ErrorCode.X``, or a string code given to an error constructor, a job
failure or an ``error[X]`` line) must be in the catalogue; each raiser must use a code of its own category; the
API's literal statuses must be the catalogue's; docs/errors.md must hold the catalogue's table as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.errors import CATALOGUE, Category, ErrorCode, markdown_table

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("service", "training", "bench", "docker", "scripts")

_CALLS = r"(?:InputError|EnvironmentFault|ServiceError|DispatchUnavailable|SubmitLater|ApiError|error_response|\.fail)"
_ENUM_USE = re.compile(r"\bErrorCode\.([A-Za-z_][A-Za-z0-9_]*)")
_STRING_CODE = re.compile(_CALLS + r"\(\s*(?:\d+\s*,\s*)?[\"']([A-Z][A-Z0-9_]+)[\"']")
_ERROR_LINE = re.compile(r"error\[([A-Z][A-Z0-9_]+)\]")
_ERROR_CODE_KW = re.compile(r"error_code\s*=\s*[\"']([A-Z][A-Z0-9_]+)[\"']")
_TYPED_RAISE = re.compile(r"\b(InputError|EnvironmentFault|DispatchUnavailable)\(\s*ErrorCode\.([A-Z0-9_]+)")
_API_ERROR = re.compile(r"\bApiError\(\s*(\d+)\s*,\s*(?:ErrorCode\.)?[\"']?([A-Z][A-Z0-9_]+)")
_CATEGORY_OF_RAISER = {
    "InputError": Category.INPUT,
    "EnvironmentFault": Category.ENVIRONMENT,
    "DispatchUnavailable": Category.TRANSIENT,
}


def codes_used(text: str) -> set[str]:
    """Every error code a source text names: enum members, string codes given to raisers, error[X] lines."""
    found = set(_ENUM_USE.findall(text))
    for pattern in (_STRING_CODE, _ERROR_LINE, _ERROR_CODE_KW):
        found |= set(pattern.findall(text))
    return found - {"CODE"}  # the placeholder of docstrings: error[CODE]: message


def sources() -> dict[str, str]:
    files = [p for d in SOURCE_DIRS if (ROOT / d).is_dir() for p in sorted((ROOT / d).rglob("*.py"))]
    return {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in files}


def test_the_catalogue_covers_every_code_exactly_once():
    assert set(CATALOGUE) == set(ErrorCode)
    for code, spec in CATALOGUE.items():
        assert spec.summary, code
        assert spec.http_status is None or 400 <= spec.http_status <= 599, code
        assert spec.exit_status in (1, 2, 75), code


def test_every_code_raised_in_the_source_is_in_the_catalogue():
    used: dict[str, set[str]] = {}
    for path, text in sources().items():
        if path == "service/errors.py":
            continue
        for code in codes_used(text):
            used.setdefault(code, set()).add(path)
    assert len(used) >= 30, f"the scan found too few codes to be looking at the source: {sorted(used)}"
    unknown = {code: sorted(paths) for code, paths in used.items() if code not in ErrorCode.__members__}
    assert not unknown, f"codes raised but not in service/errors.py's catalogue: {unknown}"


def test_each_raiser_uses_codes_of_its_category():
    wrong = []
    for path, text in sources().items():
        for raiser, name in _TYPED_RAISE.findall(text):
            if CATALOGUE[ErrorCode[name]].category != _CATEGORY_OF_RAISER[raiser]:
                wrong.append(f"{path}: {raiser}({name}) but {name} is {CATALOGUE[ErrorCode[name]].category}")
    assert not wrong, "\n".join(wrong)


def test_api_errors_use_the_catalogue_status():
    seen, wrong = 0, []
    for path, text in sources().items():
        for status, name in _API_ERROR.findall(text):
            seen += 1
            if CATALOGUE[ErrorCode[name]].http_status != int(status):
                wrong.append(f"{path}: ApiError({status}, {name}); the catalogue says {CATALOGUE[ErrorCode[name]]}")
    assert seen >= 3 and not wrong, "\n".join(wrong)


def test_the_listener_statuses_are_the_catalogue_dicom_statuses():
    from service import errors
    from service.listener import scp

    assert scp.STATUS_OUT_OF_RESOURCES == errors.DICOM_OUT_OF_RESOURCES
    assert scp.STATUS_DATASET_MISMATCH == errors.DICOM_DATASET_MISMATCH
    assert scp.STATUS_CANNOT_UNDERSTAND == errors.DICOM_CANNOT_UNDERSTAND


def test_the_catalogue_is_documented_as_it_is():
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert markdown_table() in doc, "docs/errors.md is out of date: paste `python -m service.errors` into it"
    assert "docs/errors.md" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('raise InputError("NOPE_CODE", "x")', "NOPE_CODE"),
        ('raise DispatchUnavailable(\n    "NOPE_CODE",\n    "x")', "NOPE_CODE"),
        ('raise ApiError(409, "NOPE_CODE", "x")', "NOPE_CODE"),
        ("raise SystemExit(f'error[NOPE_CODE]: {path}')", "NOPE_CODE"),
        ("store.fail(job_id, ErrorCode.NOPE_CODE, 'x')", "NOPE_CODE"),
        ('JobView(job_id, "failed", error_code="NOPE_CODE")', "NOPE_CODE"),
    ],
)
def test_the_scan_sees_each_way_of_raising_a_code(text: str, code: str):
    assert code in codes_used(text)
