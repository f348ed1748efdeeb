"""One training/evaluation case in the canonical order of ``service.pipeline.volume`` (z, y, x; +LPS)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CaseData:
    case_id: str
    hu_zyx: np.ndarray  # float32 HU
    spacing_mm_zyx: tuple[float, float, float]
    # ROI name -> bool mask (same grid); a gland that is not contoured for this patient is absent (not empty)
    masks: dict[str, np.ndarray]
    # the clinical plan dose in Gy on the same grid, where the source provides one (OpenKBP dose.csv)
    dose_gy_zyx: np.ndarray | None = None


@dataclass
class SkipReport:
    """Patients a reader left out, with the reason for each."""

    skipped: dict[str, str]

    def summary(self) -> str:
        if not self.skipped:
            return "no patients skipped"
        lines = [f"{len(self.skipped)} patients skipped:"]
        lines += [f"  {pid}: {why}" for pid, why in sorted(self.skipped.items())]
        return "\n".join(lines)
