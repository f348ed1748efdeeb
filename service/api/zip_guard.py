"""Zip structure checks made before (and instead of trusting) Python's ``zipfile`` (issue 16).

- ``directory_bounds``: the End Of Central Directory record (zip64 too) read directly, so that the number of
  records (files *and* directories) and the central directory's size are bounded before ``zipfile`` builds one
  ``ZipInfo`` per record (2,000,000 records cost 47 s and 1.1 GB);
- ``check_no_overlap``: every entry's local header and data must lie in its own byte range. A central directory
  that lists one local entry many times (or entries that share bytes) turns a small archive into gigabytes of
  output whatever the per-entry ratio; Python 3.11's ``zipfile`` does not check this (3.12 does, partly).

Hand-written because neither ``zipfile`` nor another maintained library exposes these checks.
"""

from __future__ import annotations

import struct
import zipfile
from typing import BinaryIO

from service.errors import ErrorCode, InputError

EOCD_SIG = b"PK\x05\x06"
EOCD64_LOCATOR_SIG = b"PK\x06\x07"
EOCD64_SIG = b"PK\x06\x06"
LOCAL_SIG = b"PK\x03\x04"
EOCD_SIZE = 22
MAX_COMMENT = 65535
CD_BYTES_PER_RECORD = 1024  # a central directory record: 46 bytes + name + extra + comment; generous


def directory_bounds(fp: BinaryIO, archive: str) -> tuple[int, int]:
    """(number of central directory records, central directory size in bytes) from the (zip64) EOCD record."""
    fp.seek(0, 2)
    size = fp.tell()
    tail_len = min(size, EOCD_SIZE + MAX_COMMENT)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    at = tail.rfind(EOCD_SIG)
    if at < 0 or len(tail) - at < EOCD_SIZE:
        raise InputError(ErrorCode.BAD_ARCHIVE, f"{archive}: not a readable zip archive (no end of central directory)")
    _, _, _, n_disk, n_total, cd_size, _, _ = struct.unpack("<4sHHHHIIH", tail[at : at + EOCD_SIZE])
    records, cd_bytes = max(n_disk, n_total), cd_size
    loc = at - 20
    if loc >= 0 and tail[loc : loc + 4] == EOCD64_LOCATOR_SIG:
        (eocd64_offset,) = struct.unpack("<Q", tail[loc + 8 : loc + 16])
        fp.seek(eocd64_offset)
        rec = fp.read(56)
        if len(rec) == 56 and rec[:4] == EOCD64_SIG:
            n64_disk, n64_total, cd64_size = struct.unpack("<QQQ", rec[24:48])
            records, cd_bytes = max(records, n64_disk, n64_total), max(cd_bytes, cd64_size)
    return records, cd_bytes


def check_directory(fp: BinaryIO, archive: str, max_records: int) -> None:
    """Refuse more records than ``max_records`` (TOO_MANY_FILES; directories count) or a central directory larger
    than ``max_records`` records can need (UNSAFE_ARCHIVE), before the directory is parsed."""
    records, cd_bytes = directory_bounds(fp, archive)
    if records > max_records:
        raise InputError(
            ErrorCode.TOO_MANY_FILES,
            f"{archive}: {records} entries (files and folders), more than the {max_records} still allowed",
        )
    if cd_bytes > max(records, 1) * CD_BYTES_PER_RECORD:
        raise InputError(
            ErrorCode.UNSAFE_ARCHIVE,
            f"{archive}: central directory of {cd_bytes} bytes for {records} entries; refused before parsing it",
        )


def check_no_overlap(fp: BinaryIO, archive: str, infos: list[zipfile.ZipInfo]) -> None:
    """UNSAFE_ARCHIVE when two entries' local header + data ranges overlap (or one lies outside the file)."""
    fp.seek(0, 2)
    size = fp.tell()
    spans = []
    for info in infos:
        fp.seek(info.header_offset)
        head = fp.read(30)
        if len(head) < 30 or head[:4] != LOCAL_SIG:
            raise InputError(ErrorCode.BAD_ARCHIVE, f"{archive}: entry {info.filename!r} has no local header")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        end = info.header_offset + 30 + name_len + extra_len + info.compress_size
        if end > size:
            raise InputError(ErrorCode.BAD_ARCHIVE, f"{archive}: entry {info.filename!r} extends past the end")
        spans.append((info.header_offset, end, info.filename))
    spans.sort()
    for (_, end, name), (start, _, other) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise InputError(
                ErrorCode.UNSAFE_ARCHIVE,
                f"{archive}: entries {name!r} and {other!r} overlap (the same bytes listed twice); refused as a "
                "possible zip bomb",
            )
