"""Write the QA's uncertainty map as NIfTI (``uncertainty.nii.gz``) on the CT's grid.

The same layout as the review workstation's and ``--nifti``'s masks (``service.review.nifti``: RAS+ voxel order,
diagonal affine, qform/sform code 1), so the map overlays the CT in the review viewer, 3D Slicer or ITK-SNAP.
Values: float32 in [0, 1], 0 = the members agree and the probabilities are sharp (see
``service.pipeline.qa_perturb``). Written slice by slice from the map's box (``gland_boxes.BoxedMap``), so the
whole float32 grid is never held (161 MB for a 512 x 512 x 154 CT, and as much again for the file's bytes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.pipeline.gland_boxes import BoxedMap
from service.pipeline.volume import Volume


def write_uncertainty_nifti(ct: Volume, uncertainty: BoxedMap, path: Path) -> None:
    """Write ``uncertainty`` (on ``ct``'s grid) to ``path`` (gzipped NIfTI-1, float32)."""
    from service.review.nifti import write_nifti_slices

    if uncertainty.shape_zyx != ct.shape_zyx:
        raise ValueError(f"uncertainty shape {uncertainty.shape_zyx} != CT grid {ct.shape_zyx}")
    nz, ny, nx = ct.shape_zyx
    slices = (uncertainty.crop((slice(k, k + 1), slice(0, ny), slice(0, nx)))[0] for k in range(nz))
    write_nifti_slices(Path(path), slices, ct.shape_zyx, ct.spacing_mm_zyx, ct.origin_lps, np.float32)
