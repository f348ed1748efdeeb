"""DICOM SEG and NIfTI masks beside the RTSTRUCT (``segment --seg/--nifti``): valid (dciodvfy), and holding exactly
the pipeline's masks, for a feet-first series whose stored pixel order differs from the canonical one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from service.pipeline.segment import run_segmentation
from tests.bundle_factory import build_oracle_bundle, oracle_phantom
from tests.conftest import require_tool
from tests.dicom_factory import write_ct_series


@pytest.fixture(scope="module")
def oracle_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_oracle_bundle(store, promote=True)
    return store


def _seg_to_canonical(path: Path, ct) -> dict[str, np.ndarray]:
    """Read a SEG with highdicom and place every segment voxel on the CT's canonical grid by its LPS position."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    out = {}
    for number in seg.segment_numbers:
        label = seg.get_segment_description(number).segment_label
        vol = seg.get_volume(segment_numbers=[number], combine_segments=True)
        idx = np.argwhere(vol.array > 0)
        lps = (vol.affine @ np.c_[idx, np.ones(len(idx))].T).T[:, :3]
        sz, sy, sx = ct.spacing_mm_zyx
        ox, oy, oz = ct.origin_lps
        kji = np.rint(np.c_[(lps[:, 2] - oz) / sz, (lps[:, 1] - oy) / sy, (lps[:, 0] - ox) / sx]).astype(int)
        mask = np.zeros(ct.shape_zyx, dtype=bool)
        mask[tuple(kji.T)] = True
        out[label] = mask
    return out


def test_seg_and_nifti_hold_the_pipelines_masks(oracle_store: Path, tmp_path: Path) -> None:
    dciodvfy = require_tool("dciodvfy")
    import nibabel as nib

    hu, _ = oracle_phantom()
    ct_dir = tmp_path / "ct"
    write_ct_series(ct_dir, hu, (2.5, 4.0, 4.0), (12.0, -30.0, 40.0), "FFS")
    rs, seg, prefix = tmp_path / "rs.dcm", tmp_path / "seg.dcm", tmp_path / "masks"
    args = ["--model-store", str(oracle_store), "segment", str(ct_dir), "--output", str(rs), "--quiet"]
    assert main([*args, "--seg", str(seg), "--nifti", str(prefix)]) == 0
    assert rs.is_file()
    result = run_segmentation(ct_dir, model="oracle:1.0.0", store=oracle_store)
    masks = {g: m.mask_zyx for g, m in result.glands.items()}
    assert all(m.any() for m in masks.values())

    out = subprocess.run([dciodvfy, str(seg)], capture_output=True, text=True)
    lines = (out.stdout + out.stderr).splitlines()
    assert lines[0] == "Segmentation" and [ln for ln in lines if ln.startswith("Error")] == [], lines
    # the SEG's recommended display colours are the RTSTRUCT's ROI Display Colors (one structure template)
    import highdicom as hd
    import pydicom

    rs_ds = pydicom.dcmread(rs)
    numbers = {r.ROINumber: r.ROIName for r in rs_ds.StructureSetROISequence}
    rs_rgb = {numbers[c.ReferencedROINumber]: [int(v) for v in c.ROIDisplayColor] for c in rs_ds.ROIContourSequence}
    for item in pydicom.dcmread(seg).SegmentSequence:
        rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        assert np.abs(np.subtract(rgb, rs_rgb[item.SegmentLabel])).max() <= 2, (item.SegmentLabel, rgb)
    back = _seg_to_canonical(seg, result.ct)
    assert set(back) == set(masks)
    for g in masks:
        assert np.array_equal(back[g], masks[g]), g

    from service.review.nifti import ras_affine, ras_to_zyx

    for g, m in masks.items():
        img = nib.load(f"{prefix}_{g}.nii.gz")
        data = np.asarray(img.dataobj)
        assert data.dtype == np.uint8 and np.array_equal(ras_to_zyx(data).astype(bool), m), g
        np.testing.assert_allclose(img.affine, ras_affine(m.shape, result.ct.spacing_mm_zyx, result.ct.origin_lps))
        # the voxel at the CT's origin (canonical index 0, 0, 0) lies at its LPS position, in RAS
        ox, oy, oz = result.ct.origin_lps
        i, j = m.shape[2] - 1, m.shape[1] - 1  # RAS voxel order runs against canonical x and y
        np.testing.assert_allclose(img.affine @ [i, j, 0, 1], [-ox, -oy, oz, 1])


def test_a_failed_run_leaves_no_research_output(oracle_store: Path, tmp_path: Path) -> None:
    hu, _ = oracle_phantom()
    write_ct_series(tmp_path / "ct", hu[:2], (2.5, 4.0, 4.0), (0.0, 0.0, 0.0))  # too few slices
    args = ["--model-store", str(oracle_store), "segment", str(tmp_path / "ct"), "--output", str(tmp_path / "rs.dcm")]
    assert main([*args, "--seg", str(tmp_path / "seg.dcm"), "--nifti", str(tmp_path / "m")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct"]
