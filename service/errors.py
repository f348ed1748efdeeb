"""The error catalogue: every stable error code, its category and what each adapter answers for it.

Every code the service, the listener and the training command lines report is an :class:`ErrorCode`, and
:data:`CATALOGUE` says, for each one, in one place:

- its **category**: ``input`` (the request, series or file is refused; sending it again fails again),
  ``environment`` (the installation is at fault: the model store, a setting; fix it, then retry), ``transient``
  (try again later: queue or broker down, disk full) or ``internal`` (a bug or a lost worker; the log has details);
- the **HTTP status** of the API's error response (``None``: never an HTTP error response: a job's recorded failure,
  seen in ``GET /v1/jobs/{id}``, or a command line's error);
- the **exit status** of a command line that stops on it (``error[CODE]: message`` on stderr);
- the **DICOM status** a peer of the listener sees for it: the C-STORE status the listener answers for an instance
  showing this fault, ``None`` where the fault is found after the C-STORE was answered (the listener then audits
  the job as ``job_rejected``, ``job_deferred`` or ``job_finished`` with the code; see docs/listener.md).

Raise :class:`InputError` for ``input`` codes and :class:`EnvironmentFault` for ``environment`` codes; the message
names the file and, where relevant, the DICOM attribute by tag and keyword (never ``assert``). Queueing problems
are ``service.jobs.dispatch.DispatchUnavailable`` (transient codes), HTTP-only answers
``service.api.errors.ApiError``. ``python -m service.errors`` prints the catalogue as the table in docs/errors.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Category(StrEnum):
    INPUT = "input"
    ENVIRONMENT = "environment"
    TRANSIENT = "transient"
    INTERNAL = "internal"


class ErrorCode(StrEnum):
    # series loading / validation
    EMPTY_INPUT = "EMPTY_INPUT"
    NO_CT_SERIES = "NO_CT_SERIES"
    NOT_CT = "NOT_CT"
    MULTIPLE_SERIES = "MULTIPLE_SERIES"
    SERIES_NOT_FOUND = "SERIES_NOT_FOUND"
    CORRUPT_FILE = "CORRUPT_FILE"
    MISSING_ATTRIBUTE = "MISSING_ATTRIBUTE"
    INVALID_ATTRIBUTE = "INVALID_ATTRIBUTE"
    # hostile or broken senders (issue 16)
    INFLATED_TOO_LARGE = "INFLATED_TOO_LARGE"
    IMPLAUSIBLE_GEOMETRY = "IMPLAUSIBLE_GEOMETRY"
    INCONSISTENT_GEOMETRY = "INCONSISTENT_GEOMETRY"
    DUPLICATE_POSITION = "DUPLICATE_POSITION"
    NONUNIFORM_SPACING = "NONUNIFORM_SPACING"
    GANTRY_TILT = "GANTRY_TILT"
    OBLIQUE_ORIENTATION = "OBLIQUE_ORIENTATION"
    TOO_FEW_SLICES = "TOO_FEW_SLICES"
    TOO_LARGE = "TOO_LARGE"
    UNSUPPORTED_TRANSFER_SYNTAX = "UNSUPPORTED_TRANSFER_SYNTAX"
    PIXEL_DATA_ERROR = "PIXEL_DATA_ERROR"
    MULTIFRAME_NOT_SUPPORTED = "MULTIFRAME_NOT_SUPPORTED"
    INCONSISTENT_SERIES = "INCONSISTENT_SERIES"
    # reference RTSTRUCT
    BAD_REFERENCE = "BAD_REFERENCE"
    # HTTP uploads
    BAD_UPLOAD = "BAD_UPLOAD"
    UPLOAD_TOO_LARGE = "UPLOAD_TOO_LARGE"
    TOO_MANY_FILES = "TOO_MANY_FILES"
    UNSAFE_ARCHIVE = "UNSAFE_ARCHIVE"
    BAD_ARCHIVE = "BAD_ARCHIVE"
    # HTTP requests
    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    HTTP_ERROR = "HTTP_ERROR"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    JOB_NOT_SUCCEEDED = "JOB_NOT_SUCCEEDED"
    OUTPUT_NOT_FOUND = "OUTPUT_NOT_FOUND"
    # the review workstation (service.review)
    REVIEW_NOT_AVAILABLE = "REVIEW_NOT_AVAILABLE"
    REVISION_NOT_FOUND = "REVISION_NOT_FOUND"
    REVISION_STALE = "REVISION_STALE"
    REVIEW_DECIDED = "REVIEW_DECIDED"
    UNKNOWN_STRUCTURE = "UNKNOWN_STRUCTURE"
    BAD_LABEL = "BAD_LABEL"
    NO_CHANGE = "NO_CHANGE"
    # the installation
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    MODEL_INTEGRITY = "MODEL_INTEGRITY"
    CONFIG = "CONFIG"
    # queueing (service.jobs.dispatch.DispatchUnavailable)
    INSUFFICIENT_STORAGE = "INSUFFICIENT_STORAGE"
    QUEUE_FULL = "QUEUE_FULL"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"
    # job failures that are not about the input (the job record's error)
    WORKER_LOST = "WORKER_LOST"
    TIMEOUT = "TIMEOUT"
    STALLED = "STALLED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # training command lines
    BAD_TRAINING_DATA = "BAD_TRAINING_DATA"
    BAD_INIT_WEIGHTS = "BAD_INIT_WEIGHTS"
    BAD_DOSE = "BAD_DOSE"
    BAD_TOLERANCES = "BAD_TOLERANCES"
    BAD_OUTPUT_DIR = "BAD_OUTPUT_DIR"


# exit status of a command line by category: 2 as for a usage error (the input or the installation must change),
# 75 EX_TEMPFAIL (sysexits.h: try again later), 1 as for an uncaught exception
EXIT_STATUS: dict[Category, int] = {
    Category.INPUT: 2,
    Category.ENVIRONMENT: 2,
    Category.TRANSIENT: 75,
    Category.INTERNAL: 1,
}

# C-STORE statuses the listener answers (service/listener/scp.py decides them per instance)
DICOM_OUT_OF_RESOURCES = 0xA700
DICOM_DATASET_MISMATCH = 0xA900
DICOM_CANNOT_UNDERSTAND = 0xC210


@dataclass(frozen=True)
class ErrorSpec:
    category: Category
    http_status: int | None
    dicom_status: int | None
    summary: str

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.category]


def _spec(category: Category, http: int | None, summary: str, dicom: int | None = None) -> ErrorSpec:
    return ErrorSpec(category, http, dicom, summary)


_I, _E, _T, _X = Category.INPUT, Category.ENVIRONMENT, Category.TRANSIENT, Category.INTERNAL
C = ErrorCode

CATALOGUE: dict[ErrorCode, ErrorSpec] = {
    C.EMPTY_INPUT: _spec(_I, 422, "no files, or an output folder that does not exist"),
    C.NO_CT_SERIES: _spec(_I, 422, "no CT image among the files"),
    C.NOT_CT: _spec(_I, 422, "an image that is not CT (Modality, SOP Class)", DICOM_DATASET_MISMATCH),
    C.MULTIPLE_SERIES: _spec(_I, 422, "more than one CT series and none chosen"),
    C.SERIES_NOT_FOUND: _spec(_I, 422, "the chosen SeriesInstanceUID is not among the files"),
    C.CORRUPT_FILE: _spec(_I, 422, "a file that cannot be read as DICOM", DICOM_CANNOT_UNDERSTAND),
    C.MISSING_ATTRIBUTE: _spec(_I, 422, "a required attribute is absent", DICOM_DATASET_MISMATCH),
    C.INVALID_ATTRIBUTE: _spec(_I, 422, "an attribute present but not a valid value", DICOM_DATASET_MISMATCH),
    C.INCONSISTENT_GEOMETRY: _spec(_I, 422, "slices disagree on orientation, size or pixel spacing"),
    C.DUPLICATE_POSITION: _spec(_I, 422, "two slices at one position"),
    C.NONUNIFORM_SPACING: _spec(_I, 422, "gaps or uneven slice spacing"),
    C.GANTRY_TILT: _spec(_I, 422, "a tilted gantry (slices sheared along the normal)"),
    C.OBLIQUE_ORIENTATION: _spec(_I, 422, "an orientation that is not axial"),
    C.TOO_FEW_SLICES: _spec(_I, 422, "fewer slices than the model's plan needs"),
    C.TOO_LARGE: _spec(_I, 413, "a series needing more memory than PAROTID_MEMORY_BUDGET_MB (from its headers)"),
    C.INFLATED_TOO_LARGE: _spec(
        _I, 413, "a deflated data set inflating beyond 64 MiB (measured before parsing)", DICOM_OUT_OF_RESOURCES
    ),
    C.IMPLAUSIBLE_GEOMETRY: _spec(_I, 422, "pixel/slice spacing, field of view or position that no CT has"),
    C.UNSUPPORTED_TRANSFER_SYNTAX: _spec(_I, 422, "pixel data in a transfer syntax the pipeline does not decode"),
    C.PIXEL_DATA_ERROR: _spec(_I, 422, "pixel data that cannot be decoded or is truncated", DICOM_DATASET_MISMATCH),
    C.MULTIFRAME_NOT_SUPPORTED: _spec(_I, 422, "a multi-frame CT image"),
    C.INCONSISTENT_SERIES: _spec(_I, 422, "instances of one series that disagree (e.g. Frame of Reference)"),
    C.BAD_REFERENCE: _spec(_I, 422, "a reference RTSTRUCT that cannot be used"),
    C.BAD_UPLOAD: _spec(_I, 400, "not multipart, no files, an unknown field, a malformed body"),
    C.UPLOAD_TOO_LARGE: _spec(_I, 413, "more bytes than PAROTID_MAX_UPLOAD_BYTES"),
    C.TOO_MANY_FILES: _spec(_I, 413, "more files than PAROTID_MAX_UPLOAD_FILES"),
    C.UNSAFE_ARCHIVE: _spec(_I, 400, "a zip entry with an absolute path, '..', a symlink, or a zip bomb"),
    C.BAD_ARCHIVE: _spec(_I, 400, "a zip archive that is unreadable or encrypted"),
    C.BAD_REQUEST: _spec(_I, 422, "a request that does not match the API (parameters, body)"),
    C.UNAUTHORIZED: _spec(_I, 401, "no API key, or an unknown one"),
    C.NOT_FOUND: _spec(_I, 404, "no such endpoint"),
    C.METHOD_NOT_ALLOWED: _spec(_I, 405, "the endpoint does not take this method"),
    C.HTTP_ERROR: _spec(_I, None, "another HTTP error of the framework (its own status)"),
    C.JOB_NOT_FOUND: _spec(_I, 404, "no such job for this API key (unknown, deleted, or another owner's)"),
    C.JOB_NOT_SUCCEEDED: _spec(_I, 409, "outputs asked of a job that has not succeeded"),
    C.OUTPUT_NOT_FOUND: _spec(_X, 404, "a succeeded job without the output file"),
    C.REVIEW_NOT_AVAILABLE: _spec(_I, 404, "a job without review data (not succeeded, or its review cache failed)"),
    C.REVISION_NOT_FOUND: _spec(_I, 404, "no revision of that number for this job"),
    C.REVISION_STALE: _spec(_I, 409, "a revision or decision on a revision that is no longer the latest; reload"),
    C.REVIEW_DECIDED: _spec(_I, 409, "a job already approved or rejected (a decision is final)"),
    C.UNKNOWN_STRUCTURE: _spec(_I, 422, "a structure name that is not in this result"),
    C.BAD_LABEL: _spec(_I, 422, "a corrected mask with label values that name no structure"),
    C.NO_CHANGE: _spec(_I, 422, "a corrected mask equal to the revision it edits"),
    C.MODEL_NOT_FOUND: _spec(_E, 422, "no model bundle of that name/version (or none at all) in the model store"),
    C.MODEL_INTEGRITY: _spec(_E, 503, "a model bundle file missing or not matching SHA256SUMS"),
    C.CONFIG: _spec(_E, None, "a setting is missing, invalid or unsafe (the message names it)"),
    C.INSUFFICIENT_STORAGE: _spec(
        _T, 503, "the job store's disk is nearly full (PAROTID_MIN_FREE_DISK_BYTES)", DICOM_OUT_OF_RESOURCES
    ),
    C.QUEUE_FULL: _spec(_T, 503, "PAROTID_EMBEDDED_QUEUE_MAX jobs are waiting"),
    C.SHUTTING_DOWN: _spec(_T, 503, "the service is stopping"),
    C.BROKER_UNAVAILABLE: _spec(_T, 503, "Redis is not reachable; nothing was queued"),
    C.WORKER_LOST: _spec(_X, None, "the job's worker died at each of its 1 + PAROTID_MAX_REDELIVERIES starts"),
    C.TIMEOUT: _spec(_X, None, "the job ran longer than PAROTID_JOB_TIME_LIMIT_S (Celery mode)"),
    C.STALLED: _spec(_X, None, "a running job without progress for longer than a redelivery could take"),
    C.INTERNAL_ERROR: _spec(_X, 500, "a bug or an environment problem; the log has the details (by job id)"),
    C.BAD_TRAINING_DATA: _spec(_I, None, "training data that cannot be used (the message names the case)"),
    C.BAD_INIT_WEIGHTS: _spec(_I, None, "--init names no usable network of this width and depth"),
    C.BAD_DOSE: _spec(_I, None, "an RTDOSE that cannot be used (units, frame of reference, grid; several per patient)"),
    C.BAD_TOLERANCES: _spec(_I, None, "an acceptance-tolerance file that is unreadable or names unknown criteria"),
    C.BAD_OUTPUT_DIR: _spec(_I, None, "a report folder inside the model store, or one that cannot be created"),
}


def spec_for(code: ErrorCode | str) -> ErrorSpec:
    return CATALOGUE[ErrorCode(code)]


class ServiceError(Exception):
    """An error with a stable ``code`` from the catalogue and a human message naming the file/attribute/setting."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        self.code = ErrorCode(code)
        self.message = message
        super().__init__(f"{self.code}: {message}")

    @property
    def spec(self) -> ErrorSpec:
        return CATALOGUE[self.code]

    def one_line(self) -> str:
        """The CLI form, ``error[CODE]: message`` on a single line."""
        text = " ".join(self.message.split())
        return f"error[{self.code}]: {text}"


class InputError(ServiceError):
    """Rejected input (an ``input`` code): the CLI exits 2, the API answers 4xx, a job fails with the code."""


class EnvironmentFault(ServiceError):
    """The installation is at fault (an ``environment`` code: the model store): the API answers as the catalogue
    says, a job fails with the code, and the listener keeps the series and submits it again later."""


def markdown_table() -> str:
    """The catalogue as docs/errors.md's table (a test keeps the two identical)."""
    rows = ["| code | category | HTTP | exit | DICOM | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for code, s in CATALOGUE.items():
        http = str(s.http_status) if s.http_status is not None else "-"
        dicom = f"0x{s.dicom_status:04X}" if s.dicom_status is not None else "-"
        rows.append(f"| `{code}` | {s.category} | {http} | {s.exit_status} | {dicom} | {s.summary} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
