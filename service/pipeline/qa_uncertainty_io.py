"""Write the QA's uncertainty map as NIfTI (``uncertainty.nii.gz``) on the CT's grid.

The same layout as the review workstation's and ``--nifti``'s masks (``service.review.nifti``: RAS+ voxel order,
diagonal affine, qform/sform code 1), so the map overlays the CT in the review viewer, 3D Slicer or ITK-SNAP.
Values: float32 in [0, 1], 0 = the members agree and the probabilities are sharp (see
``service.pipeline.qa_perturb``). Written atomically (temporary name, ``os.replace``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.pipeline.volume import Volume


def write_uncertainty_nifti(ct: Volume, uncertainty_zyx: np.ndarray, path: Path) -> None:
    """Write ``uncertainty_zyx`` (same shape as ``ct``) to ``path`` (gzipped NIfTI-1)."""
    from service.review.nifti import nifti_bytes

    arr = np.asarray(uncertainty_zyx, dtype=np.float32)
    if arr.shape != ct.shape_zyx:
        raise ValueError(f"uncertainty shape {arr.shape} != CT grid {ct.shape_zyx}")
    Path(path).write_bytes(nifti_bytes(arr, ct.spacing_mm_zyx, ct.origin_lps))
