"""Safe extraction of an uploaded zip archive of DICOM files.

Refused before anything is extracted: entries with an absolute path (``/x``, ``\\x``, ``C:x``) or a ``..``
component and symbolic links (UNSAFE_ARCHIVE), encrypted or unreadable archives (BAD_ARCHIVE), more entries than
allowed (TOO_MANY_FILES), a declared uncompressed size over the byte limit (UPLOAD_TOO_LARGE), and zip bombs: an
entry (of at least 64 KiB) or the whole archive expanding more than ``max_ratio`` times (UNSAFE_ARCHIVE).
Before the central directory is parsed, its record count (files and folders) and size are bounded from the end
of central directory record, and entries whose bytes overlap are refused (``zip_guard``). Extraction then counts
the bytes actually produced, never trusting the declared sizes, and re-checks the free disk space as it writes
(503 INSUFFICIENT_STORAGE below ``min_free_bytes``). Entry names are never used as paths: files are written as
``<prefix><n>.dcm`` and the names kept for messages only.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from service.api.zip_guard import check_directory, check_no_overlap
from service.errors import ErrorCode, InputError
from service.jobs.dispatch import DispatchUnavailable

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
RATIO_MIN_ENTRY_BYTES = 64 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class ExtractBudget:
    """What is left of the request's limits."""

    bytes_left: int
    files_left: int
    max_ratio: float
    min_free_bytes: int = 0  # free disk space extraction must leave


def is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in ZIP_MAGIC


def _check_entry_name(archive: str, name: str) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise InputError(ErrorCode.UNSAFE_ARCHIVE, f"{archive}: entry {name!r} has an absolute path")
    if ".." in parts:
        raise InputError(ErrorCode.UNSAFE_ARCHIVE, f"{archive}: entry {name!r} contains '..'")


def _check_entries(archive: str, infos: list[zipfile.ZipInfo], budget: ExtractBudget) -> list[zipfile.ZipInfo]:
    files = []
    for info in infos:
        _check_entry_name(archive, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(ErrorCode.UNSAFE_ARCHIVE, f"{archive}: entry {info.filename!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise InputError(ErrorCode.BAD_ARCHIVE, f"{archive}: entry {info.filename!r} is encrypted")
        if not info.is_dir():
            files.append(info)
    if len(infos) > budget.files_left:  # every record counts, folders too
        raise InputError(
            ErrorCode.TOO_MANY_FILES,
            f"{archive}: {len(infos)} entries (files and folders), more than the {budget.files_left} still allowed",
        )
    total = sum(i.file_size for i in files)
    if total > budget.bytes_left:
        raise InputError(
            ErrorCode.UPLOAD_TOO_LARGE,
            f"{archive}: expands to {total} bytes, more than the {budget.bytes_left} still allowed",
        )
    for info in files:
        if info.file_size >= RATIO_MIN_ENTRY_BYTES and info.file_size > budget.max_ratio * max(info.compress_size, 1):
            raise InputError(
                ErrorCode.UNSAFE_ARCHIVE,
                f"{archive}: entry {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f} times "
                f"(limit {budget.max_ratio:.0f}); refused as a possible zip bomb",
            )
    packed = sum(i.compress_size for i in files)
    if total >= RATIO_MIN_ENTRY_BYTES and total > budget.max_ratio * max(packed, 1):
        raise InputError(
            ErrorCode.UNSAFE_ARCHIVE,
            f"{archive}: expands {total / max(packed, 1):.0f} times (limit {budget.max_ratio:.0f}); "
            "refused as a possible zip bomb",
        )
    return files


def _check_free_disk(dest_dir: Path, incoming: int, min_free_bytes: int) -> None:
    if min_free_bytes <= 0:
        return
    free = shutil.disk_usage(dest_dir).free
    if free - incoming < min_free_bytes:
        raise DispatchUnavailable(
            ErrorCode.INSUFFICIENT_STORAGE,
            f"the disk filled up while the archive was extracted ({free // 2**20} MiB free, "
            f"PAROTID_MIN_FREE_DISK_BYTES {min_free_bytes // 2**20} MiB); try again later",
            retry_after_s=300,
        )


def extract_zip(
    zip_path: Path, archive_name: str, dest_dir: Path, prefix: str, budget: ExtractBudget
) -> dict[str, str]:
    """Extract into ``dest_dir`` as ``<prefix><n>.dcm``; returns ``{file name: 'archive:entry'}``; updates budget."""
    out: dict[str, str] = {}
    try:
        with open(zip_path, "rb") as raw:
            check_directory(raw, archive_name, budget.files_left)
        with zipfile.ZipFile(zip_path) as zf:
            files = _check_entries(archive_name, zf.infolist(), budget)
            with open(zip_path, "rb") as raw:
                check_no_overlap(raw, archive_name, zf.infolist())
            for n, info in enumerate(files, 1):
                name = f"{prefix}{n:06d}.dcm"
                limit = min(info.file_size, budget.bytes_left)
                written = 0
                with zf.open(info) as src, open(dest_dir / name, "wb") as dst:
                    for chunk in iter(lambda src=src: src.read(1 << 20), b""):  # type: ignore[misc]
                        written += len(chunk)
                        if written > limit:
                            raise InputError(
                                ErrorCode.UNSAFE_ARCHIVE,
                                f"{archive_name}: entry {info.filename!r} expands beyond its declared size",
                            )
                        _check_free_disk(dest_dir, len(chunk), budget.min_free_bytes)
                        dst.write(chunk)
                budget.bytes_left -= written
                budget.files_left -= 1
                out[name] = f"{archive_name}:{info.filename}"
    except (InputError, DispatchUnavailable):
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        RuntimeError,
        EOFError,
        zlib.error,
        ValueError,
    ) as exc:
        raise InputError(ErrorCode.BAD_ARCHIVE, f"{archive_name}: not a readable zip archive ({exc})") from None
    return out
