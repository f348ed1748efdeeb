"""Bounded inflation of Deflated Explicit VR Little Endian data sets (1.2.840.10008.1.2.1.99), before parsing.

pydicom (and pynetdicom) inflate a deflated data set whole, even for a header-only read: a 1 MB file can inflate to
gigabytes. Every place that reads a data set from outside (series loading, the reference RTSTRUCT, the listener's
C-STORE) first measures the inflated size with a streaming inflate (constant memory, output discarded) and refuses
the data set above ``MAX_INFLATED_BYTES`` with ``INFLATED_TOO_LARGE``; only then does pydicom inflate it.

The limit is far above a real CT instance (a 1024 x 1024 x 16-bit slice is 2 MiB) and bounds what one read costs.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import BinaryIO

from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian

from service.errors import ErrorCode, InputError

MAX_INFLATED_BYTES = 64 * 2**20
_CHUNK = 1 << 16
_OUT_CHUNK = 1 << 20


def inflated_size_exceeds(stream: BinaryIO, limit: int) -> bool:
    """True when the raw deflate stream read from ``stream`` inflates to more than ``limit`` bytes (a corrupt
    stream is left to the parser to report). Memory: one input and one output chunk."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while not d.eof:
            buf = stream.read(_CHUNK)
            if not buf:
                break
            while buf and not d.eof:  # after the end of the stream: padding, ignored (as zlib.decompress does)
                total += len(d.decompress(buf, _OUT_CHUNK))
                if total > limit:
                    return True
                buf = d.unconsumed_tail
    except zlib.error:
        return False
    return total > limit


def too_large_error(where: str, limit: int) -> InputError:
    return InputError(
        ErrorCode.INFLATED_TOO_LARGE,
        f"{where}: the deflated data set ((0002,0010) Transfer Syntax UID {DeflatedExplicitVRLittleEndian}, "
        f"Deflated Explicit VR Little Endian) inflates to more than {limit // 2**20} MiB; refused before parsing",
    )


def check_deflated_file(fp: BinaryIO, where: str | Path, limit: int = MAX_INFLATED_BYTES) -> None:
    """Raise ``INFLATED_TOO_LARGE`` when the file open as ``fp`` is a deflated DICOM file that inflates beyond
    ``limit``. ``fp``'s position is restored; files that are not DICOM Part 10 (or whose File Meta Information
    cannot be read) are left to the parser."""
    start = fp.tell()
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        deflated = str(meta.get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian
        if deflated and inflated_size_exceeds(fp, limit):
            raise too_large_error(str(where), limit)
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - not a readable Part 10 header: the parser reports it
        pass
    finally:
        fp.seek(start)


def check_deflated_path(path: Path, limit: int = MAX_INFLATED_BYTES) -> None:
    try:
        with open(path, "rb") as fp:
            check_deflated_file(fp, path, limit)
    except OSError:
        return  # the reader reports an unreadable file


def check_deflated_bytes(data: bytes, where: str, limit: int = MAX_INFLATED_BYTES) -> None:
    """The same for a data set received without File Meta Information (a C-STORE in the deflated syntax)."""
    if inflated_size_exceeds(io.BytesIO(data), limit):
        raise too_large_error(where, limit)
