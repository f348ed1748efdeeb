"""The small typed objects passed between pipeline stages.

Canonical orientation (the one contract every stage and training share): ``array_zyx[k, j, i]`` is the voxel
whose centre lies at patient position (LPS, mm)::

    x = origin_lps[0] + i * spacing_mm_zyx[2]   # +x: patient's left
    y = origin_lps[1] + j * spacing_mm_zyx[1]   # +y: posterior
    z = origin_lps[2] + k * spacing_mm_zyx[0]   # +z: superior (head)

so every array index increases along a +LPS axis. A head-first-supine axial DICOM series stacked by ascending
slice position is already in this order; other patient positions are flipped into it by ``load_series``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SeriesInfo:
    """Identity and provenance of the source CT series, enough to reference it from an RTSTRUCT."""

    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    # SOP Instance UID of the CT image at each canonical z index (len == nz)
    slice_sop_instance_uids: tuple[str, ...]
    patient_position: str = ""
    # (0020,0032) Image Position (Patient) z of the CT image at each canonical z index, as stored in the file
    # (len == nz). Lets an RTSTRUCT put each contour at exactly its slice's z; empty: origin z + k * spacing z.
    slice_z_mm: tuple[float, ...] = ()
    # Patient, study and frame-of-reference module attributes and (0008,0005) Specific Character Set copied into
    # derived objects (``service.pipeline.dicom_modules``): keyword -> value as pydicom decoded it
    patient_study_attrs: dict[str, object] = field(default_factory=dict)
    source_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Volume:
    """A CT (or label / probability) volume on a regular, axis-aligned grid in canonical LPS order."""

    array_zyx: np.ndarray
    spacing_mm_zyx: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    info: SeriesInfo | None = None

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        s = self.array_zyx.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    def index_to_lps(self, kji: np.ndarray) -> np.ndarray:
        """Map (..., 3) array of (k, j, i) indices to (..., 3) LPS mm (x, y, z)."""
        kji = np.asarray(kji, dtype=np.float64)
        sz, sy, sx = self.spacing_mm_zyx
        ox, oy, oz = self.origin_lps
        return np.stack([ox + kji[..., 2] * sx, oy + kji[..., 1] * sy, oz + kji[..., 0] * sz], axis=-1)
