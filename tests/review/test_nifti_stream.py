"""``write_nifti_slices`` writes, slice by slice, the same NIfTI file as ``nifti_bytes`` (the uncertainty map is
written that way from its box, without a whole-grid array); both are the bytes nibabel itself writes for the
RAS-ordered array, and nibabel reads them back on the CT's grid."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from service.pipeline.gland_boxes import BoxedMap
from service.pipeline.qa_uncertainty_io import write_uncertainty_nifti
from service.pipeline.volume import Volume
from service.review.nifti import nifti_bytes, ras_affine, ras_to_zyx, write_nifti_slices, zyx_to_ras

SPACING = (2.5, 0.9, 1.1)
ORIGIN = (-100.0, -80.0, 30.0)


def test_slices_give_the_same_file_as_the_whole_array(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).random((7, 11, 13), dtype=np.float32)
    write_nifti_slices(tmp_path / "s.nii.gz", iter(arr), arr.shape, SPACING, ORIGIN, np.float32)
    streamed = gzip.decompress((tmp_path / "s.nii.gz").read_bytes())
    assert streamed == gzip.decompress(nifti_bytes(arr, SPACING, ORIGIN))
    reference = nib.Nifti1Image(zyx_to_ras(arr), ras_affine(arr.shape, SPACING, ORIGIN))
    reference.set_qform(reference.affine, code=1)
    reference.set_sform(reference.affine, code=1)
    reference.header.set_xyzt_units("mm")
    assert streamed == reference.to_bytes()  # nibabel's own writer
    for dtype in (np.uint8, np.int16):  # the label maps and the review CT
        labels = (arr * 100).astype(dtype)
        img = nib.Nifti1Image.from_bytes(gzip.decompress(nifti_bytes(labels, SPACING, ORIGIN)))
        assert img.get_data_dtype() == dtype and np.array_equal(ras_to_zyx(np.asarray(img.dataobj)), labels)
    img = nib.load(tmp_path / "s.nii.gz")
    assert np.array_equal(ras_to_zyx(np.asarray(img.dataobj)), arr)
    assert np.allclose(img.affine, ras_affine(arr.shape, SPACING, ORIGIN))
    with pytest.raises(ValueError, match="slices written"):
        write_nifti_slices(tmp_path / "short.nii.gz", iter(arr[:3]), arr.shape, SPACING, ORIGIN, np.float32)


def test_uncertainty_map_written_from_its_box(tmp_path: Path) -> None:
    shape = (6, 20, 24)
    values = np.random.default_rng(2).random((3, 5, 7), dtype=np.float32)
    m = BoxedMap(shape, (slice(2, 5), slice(10, 15), slice(3, 10)), values)
    ct = Volume(np.zeros(shape, np.float32), SPACING, ORIGIN)
    write_uncertainty_nifti(ct, m, tmp_path / "u.nii.gz")
    got = ras_to_zyx(np.asarray(nib.load(tmp_path / "u.nii.gz").dataobj))
    assert got.dtype == np.float32 and np.array_equal(got, m.full())
    with pytest.raises(ValueError, match="CT grid"):
        write_uncertainty_nifti(Volume(np.zeros((6, 20, 25), np.float32), SPACING, ORIGIN), m, tmp_path / "x.nii.gz")
