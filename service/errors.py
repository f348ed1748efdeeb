"""Typed input errors with stable codes.

Every rejection of user input raises :class:`InputError` (never ``assert``). The code is stable and documented;
the message names the file and, where relevant, the DICOM attribute by tag and keyword. Adapters map it in one
place each: the CLI to exit 2 with ``error[CODE]: message``, the API to HTTP 4xx, the listener to a DICOM failure
status.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # series loading / validation
    EMPTY_INPUT = "EMPTY_INPUT"
    NO_CT_SERIES = "NO_CT_SERIES"
    NOT_CT = "NOT_CT"
    MULTIPLE_SERIES = "MULTIPLE_SERIES"
    SERIES_NOT_FOUND = "SERIES_NOT_FOUND"
    CORRUPT_FILE = "CORRUPT_FILE"
    MISSING_ATTRIBUTE = "MISSING_ATTRIBUTE"
    INCONSISTENT_GEOMETRY = "INCONSISTENT_GEOMETRY"
    DUPLICATE_POSITION = "DUPLICATE_POSITION"
    NONUNIFORM_SPACING = "NONUNIFORM_SPACING"
    GANTRY_TILT = "GANTRY_TILT"
    OBLIQUE_ORIENTATION = "OBLIQUE_ORIENTATION"
    TOO_FEW_SLICES = "TOO_FEW_SLICES"
    TOO_LARGE = "TOO_LARGE"
    UNSUPPORTED_TRANSFER_SYNTAX = "UNSUPPORTED_TRANSFER_SYNTAX"
    PIXEL_DATA_ERROR = "PIXEL_DATA_ERROR"
    # reference RTSTRUCT
    BAD_REFERENCE = "BAD_REFERENCE"
    # model bundle
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    MODEL_INTEGRITY = "MODEL_INTEGRITY"
    # training data
    BAD_TRAINING_DATA = "BAD_TRAINING_DATA"
    # series loading (added with stage 1)
    MULTIFRAME_NOT_SUPPORTED = "MULTIFRAME_NOT_SUPPORTED"
    INCONSISTENT_SERIES = "INCONSISTENT_SERIES"
    # service uploads (HTTP API)
    BAD_UPLOAD = "BAD_UPLOAD"
    UPLOAD_TOO_LARGE = "UPLOAD_TOO_LARGE"
    TOO_MANY_FILES = "TOO_MANY_FILES"
    UNSAFE_ARCHIVE = "UNSAFE_ARCHIVE"
    BAD_ARCHIVE = "BAD_ARCHIVE"
    # series loading: an attribute present but not a valid value (e.g. a UID that is not a UID)
    INVALID_ATTRIBUTE = "INVALID_ATTRIBUTE"
    # hostile or broken senders (issue 16)
    INFLATED_TOO_LARGE = "INFLATED_TOO_LARGE"  # a deflated data set inflating beyond the per-file limit
    IMPLAUSIBLE_GEOMETRY = "IMPLAUSIBLE_GEOMETRY"  # pixel/slice spacing, field of view or position no CT has


class InputError(Exception):
    """Rejected input: a stable ``code`` and a human message naming the file/attribute."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        self.code = ErrorCode(code)
        self.message = message
        super().__init__(f"{self.code}: {message}")

    def one_line(self) -> str:
        """The CLI form, ``error[CODE]: message`` on a single line."""
        text = " ".join(self.message.split())
        return f"error[{self.code}]: {text}"
