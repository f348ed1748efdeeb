"""The one temp-file-then-rename write: a reader (another process, a crash, a full disk) never sees half a file.

``atomic_write(path)`` opens a temporary file beside ``path`` (same folder, so ``os.replace`` is atomic), named
``.<name>.<random><suffix>`` (hidden; clean-ups of interrupted writes look for the suffix), and renames it onto
``path`` when the ``with`` block ends without an error; on an error it removes the temporary file and leaves
``path`` as it was. ``mode`` sets the file's permissions (``mkstemp`` creates 0600); ``durable`` flushes the data
to disk before the rename.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_write(
    path: Path, *, mode: int | None = None, durable: bool = False, suffix: str = ".tmp"
) -> Iterator[BinaryIO]:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes, *, mode: int | None = None, suffix: str = ".tmp") -> None:
    """Write ``data`` to ``path`` with :func:`atomic_write`."""
    with atomic_write(path, mode=mode, suffix=suffix) as fh:
        fh.write(data)


def default_file_mode() -> int:
    """``0666 & ~umask``: the permissions ``open()`` would give a new file (``mkstemp`` gives 0600)."""
    return 0o666 & ~_UMASK


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import (os.umask can only be read by setting it)
