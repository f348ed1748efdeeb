"""Write an RTDOSE (RT Dose IOD, PS3.3 A.18) for tests: a dose array on an axial, head-first-supine grid.

The dose is given in the canonical LPS order (z, y, x) with its own origin and spacing (it need not be the CT's
grid); the patient, study and frame of reference are copied from a CT file so it belongs to that series.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, RTDoseStorage, generate_uid

RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"


def _ds(v: float) -> str:
    s = f"{v:.6g}"
    return s if len(s) <= 16 else f"{v:.4f}"[:16]


def write_rtdose(
    path: Path,
    dose_gy_zyx: np.ndarray,
    spacing_mm_zyx: Sequence[float],
    origin_lps: Sequence[float],
    ct_file: Path,
    *,
    absolute_offsets: bool = False,
) -> Path:
    """Write ``dose_gy_zyx`` (Gy, canonical order) as an RTDOSE at ``path``; returns ``path``."""
    ct = pydicom.dcmread(ct_file, stop_before_pixels=True)
    dose = np.asarray(dose_gy_zyx, dtype=np.float64)
    nz, ny, nx = dose.shape
    sz, sy, sx = (float(v) for v in spacing_mm_zyx)
    ox, oy, oz = (float(v) for v in origin_lps)
    peak = float(dose.max()) if dose.size else 0.0
    scaling = peak / 65000 if peak > 0 else 1e-6  # uint16 (dciodvfy 3.x cannot read 32-bit dose pixels)
    stored = np.round(dose / scaling).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTDoseStorage
    sop_uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = RTDoseStorage
    ds.SOPInstanceUID = sop_uid
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID"):  # fmt: skip
        setattr(ds, kw, ct.get(kw, ""))
    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.OperatorsName = ""
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "TestFactory"
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20260101", "120000"
    ds.ImagePositionPatient = [_ds(ox), _ds(oy), _ds(oz)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [_ds(sy), _ds(sx)]
    ds.SliceThickness = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ny, nx
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = Tag(0x3004, 0x000C)
    offsets = [oz + k * sz for k in range(nz)] if absolute_offsets else [k * sz for k in range(nz)]
    ds.GridFrameOffsetVector = [_ds(v) for v in offsets]
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = f"{scaling:.6e}"
    plan = Dataset()
    plan.ReferencedSOPClassUID = RT_PLAN_STORAGE
    plan.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedRTPlanSequence = [plan]
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
