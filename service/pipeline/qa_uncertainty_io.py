"""Write the QA's uncertainty map as NIfTI (``uncertainty.nii.gz``) on the CT's grid.

SimpleITK (already a dependency) writes the file: it takes the canonical array (z, y, x) with the CT's spacing and
LPS origin and an identity direction (the canonical axes are +LPS), and stores the NIfTI qform/sform in RAS as the
format requires, so viewers (3D Slicer, ITK-SNAP) overlay it on the CT. Values: float32 in [0, 1], 0 = members
agree and the probabilities are sharp (see ``service.pipeline.qa_perturb``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.pipeline.volume import Volume


def write_uncertainty_nifti(ct: Volume, uncertainty_zyx: np.ndarray, path: Path) -> None:
    """Write ``uncertainty_zyx`` (same shape as ``ct``) to ``path`` (name ending ``.nii.gz``)."""
    import SimpleITK as sitk

    arr = np.asarray(uncertainty_zyx, dtype=np.float32)
    if arr.shape != ct.shape_zyx:
        raise ValueError(f"uncertainty shape {arr.shape} != CT grid {ct.shape_zyx}")
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    sz, sy, sx = ct.spacing_mm_zyx
    img.SetSpacing((float(sx), float(sy), float(sz)))
    img.SetOrigin(tuple(float(o) for o in ct.origin_lps))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(path), useCompression=True)
