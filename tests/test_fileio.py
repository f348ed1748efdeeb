"""The one temp-file-then-rename write (service/fileio.py) that the job store, the outputs and the listener use."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from service.fileio import atomic_write, default_file_mode, write_atomic


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "job.json"
    target.write_text("old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json"]


def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path):
    target = tmp_path / "rtstruct.dcm"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, suffix=".partial", durable=True) as fh:
        fh.write(b"half a file")
        assert [p.name for p in tmp_path.glob(".rtstruct.dcm.*.partial")]  # written beside the target
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rtstruct.dcm"]


def test_mode(tmp_path: Path):
    write_atomic(tmp_path / "private", b"x")
    write_atomic(tmp_path / "shared", b"x", mode=default_file_mode())
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600  # mkstemp's
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == default_file_mode()
