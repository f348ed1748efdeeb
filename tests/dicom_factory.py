"""Write synthetic (or sample-derived) CT series as real DICOM files for tests.

``write_ct_series`` takes a volume in the canonical LPS order (see ``service.pipeline.volume``) and writes it
the way a scanner would for the given patient position, so loaders must undo the orientation from the tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

# ImageOrientationPatient (row direction, column direction) per patient position, as scanners write them
ORIENTATIONS: dict[str, tuple[float, ...]] = {
    "HFS": (1, 0, 0, 0, 1, 0),
    "FFS": (-1, 0, 0, 0, 1, 0),
    "HFP": (-1, 0, 0, 0, -1, 0),
    "FFP": (1, 0, 0, 0, -1, 0),
}

TEST_PATIENT_NAME = "Testpatient^Secretname"
TEST_PATIENT_ID = "PID-SECRET-0042"


def _ds_str(v: float) -> str:
    s = f"{v:.6g}"
    return s if len(s) <= 16 else f"{v:.4f}"[:16]


def write_ct_series(
    out_dir: Path,
    hu_zyx: np.ndarray,
    spacing_mm_zyx: Sequence[float],
    origin_lps: Sequence[float] = (0.0, 0.0, 0.0),
    patient_position: str = "HFS",
    *,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    patient_name: str = TEST_PATIENT_NAME,
    patient_id: str = TEST_PATIENT_ID,
    shuffle_instance_numbers: bool = True,
    file_prefix: str = "CT",
    specific_character_set: str | list[str] | None = None,
    extra_attrs: dict[str, object] | None = None,
) -> list[Path]:
    """Write ``hu_zyx`` (canonical LPS order, HU) as one CT series; returns the file paths.

    The pixel rows/columns follow ImageOrientationPatient for ``patient_position`` (HFS, FFS, HFP, FFP), and the
    slices are written in acquisition order (head to feet for head-first). Instance numbers and file names are
    deliberately scrambled when ``shuffle_instance_numbers`` so that only ImagePositionPatient orders slices.
    ``specific_character_set`` is written as (0008,0005) (the text values are encoded in it); ``extra_attrs``
    (keyword -> value) are set on every slice.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    iop = ORIENTATIONS[patient_position]
    row_dir = np.array(iop[:3], dtype=float)  # direction of increasing column index
    col_dir = np.array(iop[3:], dtype=float)  # direction of increasing row index
    nz, ny, nx = hu_zyx.shape
    sz, sy, sx = (float(v) for v in spacing_mm_zyx)
    ox, oy, oz = (float(v) for v in origin_lps)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    head_first = patient_position.startswith("HF")
    order = list(range(nz))[::-1] if head_first else list(range(nz))
    rng = np.random.default_rng(0)
    instance_numbers = rng.permutation(nz) + 1 if shuffle_instance_numbers else np.arange(nz) + 1
    paths: list[Path] = []
    for acq_idx, k in enumerate(order):
        canon = hu_zyx[k]  # (ny, nx) with j=+y, i=+x
        # The image pixel (r, c) lies at P0 + c*sx*row_dir + r*sy*col_dir; choose P0 and flips accordingly.
        img = canon
        if row_dir[0] < 0:
            img = img[:, ::-1]
        if col_dir[1] < 0:
            img = img[::-1, :]
        x0 = ox if row_dir[0] > 0 else ox + (nx - 1) * sx
        y0 = oy if col_dir[1] > 0 else oy + (ny - 1) * sy
        z = oz + k * sz
        stored = np.round((img.astype(np.float64) - rescale_intercept) / rescale_slope)
        stored = np.clip(stored, -32768, 32767).astype(np.int16)

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop_uid = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = out_dir / f"{file_prefix}{int(instance_numbers[acq_idx]) * 7919 % 100003:06d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        if specific_character_set is not None:
            ds.SpecificCharacterSet = specific_character_set
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "CT"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = "ACC123"
        ds.ReferringPhysicianName = ""
        ds.SeriesNumber = 1
        ds.InstanceNumber = int(instance_numbers[acq_idx])
        ds.Manufacturer = "TestFactory"
        ds.PatientPosition = patient_position
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [_ds_str(x0), _ds_str(y0), _ds_str(z)]
        ds.ImageOrientationPatient = [str(int(v)) for v in iop]
        ds.PixelSpacing = [_ds_str(sy), _ds_str(sx)]  # row spacing (between rows), column spacing
        ds.SliceThickness = _ds_str(sz)
        ds.SliceLocation = _ds_str(z)
        ds.PositionReferenceIndicator = ""
        ds.Rows, ds.Columns = int(img.shape[0]), int(img.shape[1])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = _ds_str(rescale_intercept)
        ds.RescaleSlope = _ds_str(rescale_slope)
        ds.RescaleType = "HU"
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
        for keyword, value in (extra_attrs or {}).items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def openkbp_to_canonical(ct: np.ndarray) -> np.ndarray:
    """OpenKBP array (i: A->P, j: R->L, k: S->I) -> canonical (z: I->S, y: A->P, x: R->L)."""
    return np.ascontiguousarray(np.transpose(ct, (2, 0, 1))[::-1])
