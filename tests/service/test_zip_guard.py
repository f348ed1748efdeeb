"""Zip archives built to exhaust the API (issue 16.6): overlapping entries, uncounted folder records, a central
directory larger than its records need, and a disk that fills up during extraction. ``extract_zip`` is what the
upload route runs for every archive part; the HTTP answers are in the corpus and tests/service/test_uploads.py."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from service.api.archive import ExtractBudget, extract_zip
from service.errors import ErrorCode, InputError
from service.jobs.dispatch import DispatchUnavailable


def overlapping_zip(n_records: int, payload: bytes) -> bytes:
    """One stored local entry, listed ``n_records`` times by the central directory (same name, same offset)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.dcm", payload)
    data = buf.getvalue()
    eocd = data.rfind(b"PK\x05\x06")
    _, _, _, _, _, cd_size, cd_offset, _ = struct.unpack("<4sHHHHIIH", data[eocd : eocd + 22])
    record = data[cd_offset : cd_offset + cd_size]
    cd = record * n_records
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n_records, n_records, len(cd), cd_offset, 0)
    return data[:cd_offset] + cd + end


def folders_zip(n_folders: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n in range(n_folders):
            zf.writestr(zipfile.ZipInfo(f"d{n}/"), b"")
        zf.writestr("a.dcm", b"x")
    return buf.getvalue()


def _extract(tmp_path: Path, data: bytes, files_left: int = 60, min_free: int = 0) -> dict[str, str]:
    z = tmp_path / "up.zip"
    z.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return extract_zip(z, "up.zip", out, "z_", ExtractBudget(8 * 2**20, files_left, 50.0, min_free))


def test_central_directory_listing_one_entry_many_times_is_refused(tmp_path):
    """50 records of one incompressible 100 KiB entry pass every ratio and size check (5 MiB < 8 MiB)."""
    data = overlapping_zip(50, os.urandom(100 * 1024))
    assert len(zipfile.ZipFile(io.BytesIO(data)).infolist()) == 50  # zipfile itself accepts it
    with pytest.raises(InputError) as info:
        _extract(tmp_path, data)
    assert info.value.code == ErrorCode.UNSAFE_ARCHIVE and "overlap" in info.value.message
    assert not list((tmp_path / "out").iterdir())


def test_folder_records_count_against_the_file_limit(tmp_path):
    with pytest.raises(InputError) as info:
        _extract(tmp_path, folders_zip(100), files_left=60)
    assert info.value.code == ErrorCode.TOO_MANY_FILES and "101 entries" in info.value.message


def test_record_count_is_bounded_before_the_directory_is_parsed(tmp_path):
    """200,000 folder records (9 MB): refused from the end-of-central-directory record."""
    data = folders_zip(200_000)
    with pytest.raises(InputError) as info:
        _extract(tmp_path, data, files_left=60)
    assert info.value.code == ErrorCode.TOO_MANY_FILES and "200001 entries" in info.value.message


def test_central_directory_larger_than_its_records_need_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.dcm", b"x" * 10)
    data = bytearray(buf.getvalue())
    eocd = data.rfind(b"PK\x05\x06")
    data[eocd + 12 : eocd + 16] = struct.pack("<I", 50 * 2**20)  # claims a 50 MiB directory for one record
    with pytest.raises(InputError) as info:
        _extract(tmp_path, bytes(data))
    assert info.value.code == ErrorCode.UNSAFE_ARCHIVE and "central directory" in info.value.message


def test_free_disk_is_rechecked_while_extracting(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.dcm", os.urandom(2 * 2**20))
    free_now = shutil.disk_usage(tmp_path).free
    with pytest.raises(DispatchUnavailable) as info:
        _extract(tmp_path, buf.getvalue(), min_free=free_now + 2**30)
    assert info.value.code == ErrorCode.INSUFFICIENT_STORAGE


def test_an_ordinary_archive_still_extracts(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("series/"), b"")
        for n in range(5):
            zf.writestr(f"series/{n}.dcm", os.urandom(1000))
    assert len(_extract(tmp_path, buf.getvalue(), min_free=1)) == 5
