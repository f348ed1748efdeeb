"""Zip archives built in memory, including the unsafe kinds an upload must refuse."""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path


def zip_bytes(entries: dict[str, bytes], *, symlink: str | None = None, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of ``entries`` (name -> data); ``symlink`` adds an entry of that name that is a symbolic link."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def zip_files(files: Iterable[Path], folder: str = "series") -> bytes:
    """A zip of ``files`` under ``folder/`` (their own names)."""
    return zip_bytes({f"{folder}/{p.name}": p.read_bytes() for p in files})
