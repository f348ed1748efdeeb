"""Commissioning test patients: a folder with a CT series, a reference RTSTRUCT and optionally an RTDOSE."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.pipeline.rtstruct import write_rtstruct
from service.pipeline.series import load_series
from tests.dicom_factory import write_ct_series
from tests.rtdose_factory import write_rtdose


def write_patient(
    folder: Path,
    hu_zyx: np.ndarray,
    spacing_mm_zyx: tuple[float, float, float],
    origin_lps: tuple[float, float, float],
    reference: dict[str, np.ndarray],
    dose_gy_zyx: np.ndarray | None = None,
) -> Path:
    """``folder/ct/*.dcm``, ``folder/RS.dcm`` (``reference``: ROI name -> mask, canonical order), ``folder/RD.dcm``
    (the dose on the CT's own grid, when given)."""
    files = write_ct_series(folder / "ct", hu_zyx, spacing_mm_zyx, origin_lps)
    ct = load_series(folder / "ct")
    write_rtstruct(ct, reference, folder / "RS.dcm", model_name="clinical", model_version="reference")
    if dose_gy_zyx is not None:
        write_rtdose(folder / "RD.dcm", dose_gy_zyx, spacing_mm_zyx, ct.origin_lps, files[0])
    return folder
