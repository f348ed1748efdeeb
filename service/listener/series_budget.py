"""The memory budget checked on every C-STORE (issue 16), not only when a series is submitted as a job.

A sender can deliver a series far larger than a worker can hold (e.g. slices of 4096 x 4096 that deflate to a few KB
each); checked only at submission, all of it is spooled first. Here each instance's headers add to its series' estimate:
distinct instances x Rows x Columns (x frames) CT voxels plus, when the model's plan spacing is known, the model-grid
voxels (``budget.model_grid_shape``; the slice step is the smaller of (0018,0088) Spacing Between Slices and (0018,0050)
Slice Thickness, else the plan's), priced with ``budget.estimated_bytes``. Once a series' estimate exceeds the budget,
that C-STORE and every later one of the series are answered ``0xA700`` and the listener drops what it had spooled of it
(``series_refused`` in the audit log): a fragment of it must never become a job. The estimate never exceeds what the
exact check at submission (``series.check_memory``) computes for the full series, so a series that fits is never refused
here (unless its slices are closer together than both those attributes say). The job service's check at submission stays
the exact one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from service.pipeline.budget import estimated_bytes, model_grid_shape

REMEMBERED_SERIES = 10_000  # series whose counts (or refusal) are kept; the oldest are forgotten first


@dataclass
class _Count:
    sop_uids: set[str] = field(default_factory=set)
    rows: int = 0  # the largest Rows, Columns and frames seen
    cols: int = 0
    frames: int = 1
    spacing_yx: tuple[float, float] | None = None
    step_z: float | None = None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    first_refusal: bool  # this C-STORE is the one that put the series over the budget
    n_instances: int
    need_bytes: int


class SeriesBudget:
    def __init__(self, budget_bytes: int, model_spacing_mm_zyx: Sequence[float] | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.model_spacing = tuple(model_spacing_mm_zyx) if model_spacing_mm_zyx is not None else None
        self._counts: OrderedDict[str, _Count] = OrderedDict()
        self._refused: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, series_uid: str, sop_uid: str, ds: Dataset) -> Verdict:
        """Count ``ds`` (its headers) into its series; ``ok`` False when the series is over the budget."""
        with self._lock:
            if series_uid in self._refused:
                return Verdict(False, False, 0, 0)
            c = self._counts.pop(series_uid, None) or _Count()
            self._counts[series_uid] = c  # most recent last
            while len(self._counts) > REMEMBERED_SERIES:
                self._counts.popitem(last=False)
            c.rows, c.cols = max(c.rows, _int(ds, "Rows")), max(c.cols, _int(ds, "Columns"))
            c.frames = max(c.frames, _int(ds, "NumberOfFrames", 1))
            c.spacing_yx = c.spacing_yx or _spacing_yx(ds)
            c.step_z = c.step_z or _step_z(ds)
            n = len(c.sop_uids | {sop_uid})
            need = self._need(c, n)
            if need <= self.budget_bytes:
                c.sop_uids.add(sop_uid)
                return Verdict(True, False, n, need)
            del self._counts[series_uid]
            self._refused[series_uid] = None
            while len(self._refused) > REMEMBERED_SERIES:
                self._refused.popitem(last=False)
            return Verdict(False, True, n, need)

    def forget(self, series_uid: str) -> None:
        """The series has left the spool (expired): its counts go too (a refusal is kept)."""
        with self._lock:
            self._counts.pop(series_uid, None)

    def _need(self, c: _Count, n: int) -> int:
        n_slices = n * c.frames
        n_ct = n_slices * c.rows * c.cols
        n_model = 0
        if self.model_spacing is not None and c.spacing_yx is not None and c.rows and c.cols:
            spacing_in = (c.step_z or self.model_spacing[0], *c.spacing_yx)
            shape = model_grid_shape((n_slices, c.rows, c.cols), spacing_in, self.model_spacing)
            n_model = shape[0] * shape[1] * shape[2]
        return estimated_bytes(n_ct, n_model)


def _int(ds: Dataset, keyword: str, default: int = 0) -> int:
    try:
        return int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        return default


def _positive(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if 0 < v < 1e4 else None


def _spacing_yx(ds: Dataset) -> tuple[float, float] | None:
    ps = ds.get("PixelSpacing")
    if ps is None or len(ps) != 2:
        return None
    y, x = _positive(ps[0]), _positive(ps[1])
    return (y, x) if y is not None and x is not None else None


def _step_z(ds: Dataset) -> float | None:
    """The smaller of Spacing Between Slices and Slice Thickness (overlapping reconstructions: thickness > step)."""
    steps = [v for v in (_positive(ds.get("SpacingBetweenSlices")), _positive(ds.get("SliceThickness"))) if v]
    return min(steps) if steps else None
