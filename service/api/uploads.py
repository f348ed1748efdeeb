"""Receive ``POST /v1/jobs`` multipart bodies straight to disk, enforcing the limits while the bytes arrive.

Parts: ``files`` (repeated; each a DICOM file or a zip archive of them, recognised by content), ``reference``
(one RTSTRUCT, optional), ``model`` and ``series_uid`` (short text, optional). Each file part is written to the
staging folder chunk by chunk (never held whole in memory); the request is refused as soon as it passes
``max_upload_bytes`` or ``max_upload_files``. Zip archives are extracted afterwards by ``archive.extract_zip``
within what is left of the same limits.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from service.api.archive import ExtractBudget, extract_zip, is_zip
from service.errors import ErrorCode, InputError
from service.jobs.ingest import write_manifest
from service.jobs.models import INPUT_DIR, REFERENCE_FILE

MULTIPART_OVERHEAD_BYTES = 1 << 20  # headers and boundaries on top of the file bytes
# text field -> (pattern, longest value)
TEXT_FIELDS: dict[str, tuple[str, int]] = {
    "model": (r"^[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)?$", 128),
    "series_uid": (r"^[0-9]+(\.[0-9]+)*$", 64),
}
TEXT_MAX_BYTES = 128


MAX_BOUNDARY_CHARS = 256


@dataclass
class UploadLimits:
    max_bytes: int
    max_files: int
    zip_max_ratio: float
    min_free_bytes: int = 0  # free disk space zip extraction must leave (PAROTID_MIN_FREE_DISK_BYTES)


@dataclass
class ReceivedUpload:
    n_parts: int = 0
    n_files: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    has_reference: bool = False


def _bad(message: str) -> InputError:
    return InputError(ErrorCode.BAD_UPLOAD, message)


class _Receiver:
    """python-multipart callbacks: route each part to a file in the staging folder or a small text buffer."""

    def __init__(self, staging: Path, limits: UploadLimits) -> None:
        self.staging, self.limits = staging, limits
        self.upload_dir = staging / ".upload"
        self.upload_dir.mkdir()
        (staging / INPUT_DIR).mkdir()
        self.result = ReceivedUpload()
        self.names: dict[str, str] = {}
        self.archives: list[tuple[Path, str]] = []
        self.bytes_in_files = 0
        self.ended = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._sink: IO[bytes] | None = None
        self._sink_path: Path | None = None
        self._text: bytearray | None = None
        self._name = ""
        self._filename = ""

    # header callbacks
    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise _bad("a multipart part has no Content-Disposition header")
        kind, params = parse_options_header(disposition)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self._name = name
        self._filename = params.get(b"filename", b"").decode("utf-8", "replace")
        self.result.n_parts += 1
        if name == "files":
            self.result.n_files += 1
            if self.result.n_files > self.limits.max_files:
                raise InputError(ErrorCode.TOO_MANY_FILES, f"more than {self.limits.max_files} files in one request")
            self._open(self.upload_dir / f"{self.result.n_files:06d}")
        elif name == "reference":
            if self.result.has_reference:
                raise _bad("more than one 'reference' part; send one RTSTRUCT")
            self.result.has_reference = True
            self._open(self.staging / REFERENCE_FILE)
        elif name in TEXT_FIELDS:
            if name in self.result.fields:
                raise _bad(f"more than one {name!r} part")
            self._text = bytearray()
        else:
            raise _bad(f"unknown form field {name[:40]!r}; expected files, reference, model, series_uid")

    def _open(self, path: Path) -> None:
        self._sink_path = path
        self._sink = open(path, "wb")  # noqa: SIM115  (closed in on_part_end or close())

    # data callbacks
    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._sink is not None:
            self.bytes_in_files += n
            if self.bytes_in_files > self.limits.max_bytes:
                raise InputError(ErrorCode.UPLOAD_TOO_LARGE, f"the upload is larger than {self.limits.max_bytes} bytes")
            self._sink.write(data[start:end])
        elif self._text is not None:
            self._text += data[start:end]
            if len(self._text) > TEXT_MAX_BYTES:
                raise _bad(f"field {self._name!r} is longer than {TEXT_MAX_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None
            path = self._sink_path
            assert path is not None
            label = self._filename or f"part {self.result.n_files}"
            if self._name == "reference":
                self.names[REFERENCE_FILE] = self._filename or "reference"
            elif is_zip(path):
                self.archives.append((path, label))
            else:
                stored = f"{INPUT_DIR}/{path.name}.dcm"
                os.rename(path, self.staging / stored)
                self.names[stored] = label
        elif self._text is not None:
            try:
                value = self._text.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise _bad(f"field {self._name!r} is not UTF-8 text") from None
            self._text = None
            pattern, longest = TEXT_FIELDS[self._name]
            if value and (len(value) > longest or not re.match(pattern, value)):
                raise _bad(f"field {self._name!r} has an invalid value (allowed: {pattern}, at most {longest})")
            self.result.fields[self._name] = value

    def on_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def callbacks(self) -> dict:
        names = (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_end",
        )
        return {n: getattr(self, n) for n in names}


async def receive_upload(request: Request, staging: Path, limits: UploadLimits) -> ReceivedUpload:
    """Stream the request body into ``staging`` (input/, reference.dcm, manifest.json); raises InputError.
    The parts arrive in ``staging/.upload/``, which is removed once every part has been moved or extracted."""
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise _bad("the body must be multipart/form-data with 'files' parts (DICOM files or one zip archive)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise InputError(
            ErrorCode.UPLOAD_TOO_LARGE, f"Content-Length {declared} exceeds the limit of {limits.max_bytes} bytes"
        )
    boundary = params[b"boundary"]
    if len(boundary) > MAX_BOUNDARY_CHARS:  # RFC 2046: 1-70 characters; python-multipart fails on long ones
        raise _bad(f"the multipart boundary has {len(boundary)} characters (at most {MAX_BOUNDARY_CHARS})")
    receiver = _Receiver(staging, limits)
    try:
        parser = MultipartParser(boundary, receiver.callbacks(), max_header_size=4096)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - whatever the parser refuses in the header is a bad request
        receiver.close()
        raise _bad(f"malformed multipart boundary ({type(exc).__name__})") from None
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limits.max_bytes + MULTIPART_OVERHEAD_BYTES:
                raise InputError(ErrorCode.UPLOAD_TOO_LARGE, f"the upload is larger than {limits.max_bytes} bytes")
            parser.write(chunk)
        parser.finalize()
    except ClientDisconnect:
        raise _bad("the client disconnected during the upload") from None
    except InputError:
        raise
    except Exception as exc:  # python-multipart's MultipartParseError and friends
        raise _bad(f"malformed multipart body ({type(exc).__name__})") from None
    finally:
        receiver.close()
    if not receiver.ended:
        raise _bad("the multipart body is incomplete (no closing boundary)")
    if receiver.result.n_files == 0:
        raise _bad("no 'files' part: send the CT series as DICOM files or one zip archive")
    budget = ExtractBudget(
        limits.max_bytes - receiver.bytes_in_files,
        limits.max_files - (receiver.result.n_files - len(receiver.archives)),
        limits.zip_max_ratio,
        limits.min_free_bytes,
    )
    for n, (path, label) in enumerate(receiver.archives, 1):
        size = path.stat().st_size
        names = await run_in_threadpool(extract_zip, path, label, staging / INPUT_DIR, f"z{n:03d}_", budget)
        receiver.names.update({f"{INPUT_DIR}/{k}": v for k, v in names.items()})
        path.unlink()
        budget.bytes_left += size  # the archive is gone: its bytes no longer count against the limit
    receiver.upload_dir.rmdir()  # consumed: every part was moved into input/ or extracted and deleted
    write_manifest(staging, receiver.names)
    return receiver.result
