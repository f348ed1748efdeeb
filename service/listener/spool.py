"""The listener's spool: received instances on disk, written atomically, one folder per series.

Layout under ``root``::

    series/<SeriesInstanceUID>/<SOPInstanceUID>.dcm        every instance received for the series (kept until expiry)
    batches/<SeriesInstanceUID>.<generation>.<tag>/         a snapshot (hard links) handed to one job

Instances are written to a temporary name in the same folder, flushed to disk, then renamed, so a file that
exists is always complete. UIDs become file names only after checking that they are UIDs (digits and dots),
which also rules out path traversal.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_valid_uid(uid: str) -> bool:
    """A DICOM UID: 1-64 characters, digits separated by single dots."""
    return 0 < len(uid) <= 64 and _UID_RE.fullmatch(uid) is not None


class Spool:
    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = Path(root)
        self.min_free_bytes = int(min_free_bytes)
        self.series_root = self.root / "series"
        self.batch_root = self.root / "batches"
        for d in (self.series_root, self.batch_root):
            d.mkdir(parents=True, exist_ok=True)

    # --- capacity
    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def has_room(self, incoming_bytes: int = 0) -> bool:
        """False when writing ``incoming_bytes`` would leave less than the free-disk watermark."""
        return self.free_bytes() - incoming_bytes >= self.min_free_bytes

    # --- instances
    def series_dir(self, series_uid: str) -> Path:
        if not is_valid_uid(series_uid):
            raise ValueError(f"not a UID: {series_uid!r}")
        return self.series_root / series_uid

    def store_instance(self, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one instance (DICOM file bytes) atomically; a resent instance replaces the earlier copy."""
        if not is_valid_uid(sop_uid):
            raise ValueError(f"not a UID: {sop_uid!r}")
        folder = self.series_dir(series_uid)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{sop_uid}.dcm"
        tmp = folder / f".{sop_uid}.{uuid.uuid4().hex}.partial"
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def series_files(self, series_uid: str) -> list[Path]:
        folder = self.series_dir(series_uid)
        return sorted(folder.glob("*.dcm")) if folder.is_dir() else []

    def spooled_series(self) -> list[str]:
        """Series folders present on disk (e.g. after a restart)."""
        return sorted(p.name for p in self.series_root.iterdir() if p.is_dir() and is_valid_uid(p.name))

    def remove_series(self, series_uid: str) -> None:
        shutil.rmtree(self.series_dir(series_uid), ignore_errors=True)

    # --- batches handed to jobs
    def snapshot(self, series_uid: str, generation: int) -> tuple[Path, int]:
        """Hard-link (or copy) the series' current instances into a fresh batch folder; returns (folder, count)."""
        tag = uuid.uuid4().hex[:8]
        batch = self.batch_root / f"{series_uid}.{generation}.{tag}"
        tmp = self.batch_root / f".{series_uid}.{generation}.{tag}.partial"
        tmp.mkdir()
        files = self.series_files(series_uid)
        try:
            for f in files:
                try:
                    os.link(f, tmp / f.name)
                except OSError:
                    shutil.copy2(f, tmp / f.name)
            os.replace(tmp, batch)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return batch, len(files)

    def remove_batch(self, batch: Path) -> None:
        if batch.parent == self.batch_root:
            shutil.rmtree(batch, ignore_errors=True)

    def clean_partials(self) -> int:
        """Remove leftovers of writes interrupted by a crash (``*.partial``); returns how many."""
        n = 0
        for p in list(self.root.rglob(".*.partial")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
        return n
