"""Optional outputs for research pipelines, from the same masks as the RTSTRUCT: a DICOM SEG and NIfTI masks.

- **DICOM SEG** (Segmentation IOD, binary, one segment per gland, built by highdicom from the CT's own headers):
  the masks go in as a ``highdicom.Volume`` whose affine is the canonical grid's (``service.pipeline.volume``), so
  highdicom places each frame by its position in the CT's Frame of Reference whatever the patient position.
  Segmented property: SCT 45289007 "Parotid gland" (category SCT 91723000 "Anatomical Structure"); the segment
  label is the structure template's ROI name and its recommended display colour the template's colour
  (``service.pipeline.structures``, as in the RTSTRUCT); algorithm type AUTOMATIC, family "Artificial
  Intelligence", named after the bundle.
- **NIfTI** (``<prefix>_<gland>.nii.gz``, uint8 0/1), written by :func:`service.review.nifti.nifti_bytes`: RAS+
  voxel order with a diagonal affine, the layout the review workstation and ``training.data.nifti`` read, so a
  viewer overlays them on the CT in place.

Both are written atomically (temporary file, then rename).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.fileio import default_file_mode, write_atomic
from service.pipeline.volume import Volume

if TYPE_CHECKING:
    from service.pipeline.qa import QAReport
    from service.pipeline.segment import SegmentationResult
    from service.pipeline.structures import StructureTemplate


def canonical_affine_lps(ct: Volume) -> np.ndarray:
    """4x4 affine from canonical (k, j, i) indices to LPS mm."""
    sz, sy, sx = ct.spacing_mm_zyx
    ox, oy, oz = ct.origin_lps
    return np.array([[0, 0, sx, ox], [0, sy, 0, oy], [sz, 0, 0, oz], [0, 0, 0, 1]], dtype=np.float64)


def build_seg(
    ct: Volume,
    masks: dict[str, np.ndarray],
    *,
    model_name: str,
    model_version: str,
    software: str,
    colors: Mapping[str, Sequence[int]] | None = None,
) -> Any:  # highdicom.seg.Segmentation
    """A highdicom Segmentation of ``masks`` (ROI name -> bool array on ``ct``'s grid, non-overlapping);
    ``colors`` (ROI name -> RGB, the structure template's) become (0062,000D) Recommended Display CIELab Value."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    if ct.info is None or not ct.info.source_files:
        raise ValueError("a DICOM SEG needs the CT's source files (a Volume read by load_series)")
    names = list(masks)
    labels = np.zeros(ct.shape_zyx, dtype=np.uint8)
    for i, name in enumerate(names, 1):
        labels[np.asarray(masks[name], dtype=bool)] = i
    volume = hd.Volume(
        labels,
        canonical_affine_lps(ct),
        coordinate_system="PATIENT",
        frame_of_reference_uid=ct.info.frame_of_reference_uid,
    )
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, version=model_version, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=name,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.ParotidGland,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*(int(c) for c in colors[name]))
            if colors and name in colors
            else None,
        )
        for i, name in enumerate(names, 1)
    ]
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct.info.source_files]
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=volume,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=902,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="parotid-seg",
        manufacturer_model_name=f"{model_name} {model_version}"[:64],
        software_versions=software,
        device_serial_number="none",
        series_description=f"{model_name} {model_version} research use only"[:64],
    )


def write_seg(
    path: Path,
    ct: Volume,
    masks: dict[str, np.ndarray],
    *,
    model_name: str,
    model_version: str,
    colors: Mapping[str, Sequence[int]] | None = None,
) -> None:
    from io import BytesIO

    from service.pipeline.rtstruct import _package_version

    seg = build_seg(
        ct, masks, model_name=model_name, model_version=model_version, software=_package_version(), colors=colors
    )
    buf = BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    write_atomic(Path(path), buf.getvalue(), mode=default_file_mode())


def write_nifti_masks(prefix: Path, ct: Volume, masks: dict[str, np.ndarray]) -> list[Path]:
    """``<prefix>_<gland>.nii.gz`` per gland (uint8 0/1, the review workstation's NIfTI layout); returns the paths."""
    from service.review.nifti import nifti_bytes

    paths = []
    for name, mask in masks.items():
        path = Path(f"{prefix}_{name}.nii.gz")
        data = nifti_bytes(np.asarray(mask, dtype=np.uint8), ct.spacing_mm_zyx, ct.origin_lps)
        write_atomic(path, data, mode=default_file_mode())
        paths.append(path)
    return paths


def write_with_research_outputs(
    result: SegmentationResult,
    rtstruct_path: Path,
    *,
    qa_path: Path | None = None,
    preview_path: Path | None = None,
    uncertainty_path: Path | None = None,
    seg_path: Path | None = None,
    nifti_prefix: Path | None = None,
    structures: StructureTemplate | None = None,
) -> QAReport:
    """The RTSTRUCT (+ QA, preview, uncertainty: ``segment.write_outputs``) and a DICOM SEG and/or NIfTI masks from
    the same masks, names and colours; on any error none of them stays."""
    from service.pipeline.segment import write_outputs
    from service.pipeline.structures import DEFAULT_TEMPLATE

    template = structures or DEFAULT_TEMPLATE
    masks = template.rename({label: g.mask_zyx for label, g in result.glands.items()})
    colors = template.rename(template.colors_for(list(result.glands)))
    ref = result.model.ref
    written: list[Path] = []
    try:
        if seg_path is not None:
            write_seg(seg_path, result.ct, masks, model_name=ref.name, model_version=ref.version, colors=colors)
            written.append(seg_path)
        if nifti_prefix is not None:
            written += write_nifti_masks(nifti_prefix, result.ct, masks)
        return write_outputs(result, rtstruct_path, qa_path, preview_path, None, uncertainty_path, structures=template)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
