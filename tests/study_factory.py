"""The other objects a real study holds next to its CT series, as DICOM files in the CT's study.

A PACS sends the whole study: an earlier structure set, a scanner's secondary-capture dose page, an encapsulated
PDF report, a key-object selection, a presentation state, an MR series. ``write_study_companions`` writes one of
each (small, valid enough for a PACS to store them) sharing the CT's patient, study and frame of reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
GRAYSCALE_PRESENTATION_STATE = "1.2.840.10008.5.1.4.1.1.11.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"

_COMMON = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def _base(ct: Dataset, sop_class: str, modality: str, series_number: int) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    for keyword in _COMMON:
        if keyword in ct:
            setattr(ds, keyword, ct[keyword].value)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.Manufacturer = "OtherVendor"
    ds.ContentDate, ds.ContentTime = "20260101", "120500"
    return ds


def _image(ds: Dataset, rows: int = 16, cols: int = 16) -> None:
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(rows * cols) % 251).astype(np.uint8).tobytes()


def _ref(ct: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ct.SOPClassUID
    item.ReferencedSOPInstanceUID = ct.SOPInstanceUID
    return item


def secondary_capture(ct: Dataset) -> FileDataset:
    """A scanner's dose page as a Secondary Capture image."""
    ds = _base(ct, SECONDARY_CAPTURE, "OT", 999)
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    _image(ds)
    return ds


def rt_structure_set(ct: Dataset) -> FileDataset:
    """An earlier (manual) structure set on the CT: one ROI, no contours."""
    ds = _base(ct, RT_STRUCTURE_SET, "RTSTRUCT", 2)
    ds.StructureSetLabel = "Manual"
    ds.StructureSetDate, ds.StructureSetTime = "20260101", "121000"
    frame = Dataset()
    frame.FrameOfReferenceUID = ct.FrameOfReferenceUID
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = ct.FrameOfReferenceUID
    roi.ROIName = "External"
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])
    contour = Dataset()
    contour.ReferencedROINumber = 1
    contour.ROIDisplayColor = [0, 255, 0]
    ds.ROIContourSequence = Sequence([contour])
    obs = Dataset()
    obs.ObservationNumber = 1
    obs.ReferencedROINumber = 1
    obs.RTROIInterpretedType = "EXTERNAL"
    obs.ROIInterpreter = ""
    ds.RTROIObservationsSequence = Sequence([obs])
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def encapsulated_pdf(ct: Dataset) -> FileDataset:
    ds = _base(ct, ENCAPSULATED_PDF, "DOC", 998)
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "Report"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    return ds


def key_object_selection(ct: Dataset) -> FileDataset:
    ds = _base(ct, KEY_OBJECT_SELECTION, "KO", 997)
    ds.ValueType = "CONTAINER"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "113000", "DCM", "Of Interest"
    ds.ConceptNameCodeSequence = Sequence([concept])
    ds.ContinuityOfContent = "SEPARATE"
    series = Dataset()
    series.SeriesInstanceUID = ct.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([_ref(ct)])
    study = Dataset()
    study.StudyInstanceUID = ct.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    return ds


def presentation_state(ct: Dataset) -> FileDataset:
    ds = _base(ct, GRAYSCALE_PRESENTATION_STATE, "PR", 996)
    ds.ContentLabel = "WINDOW"
    ds.PresentationCreationDate, ds.PresentationCreationTime = "20260101", "121500"
    series = Dataset()
    series.SeriesInstanceUID = ct.SeriesInstanceUID
    series.ReferencedImageSequence = Sequence([_ref(ct)])
    ds.ReferencedSeriesSequence = Sequence([series])
    return ds


def mr_image(ct: Dataset) -> FileDataset:
    ds = _base(ct, MR_IMAGE, "MR", 3)
    ds.FrameOfReferenceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    _image(ds)
    return ds


def write_study_companions(out_dir: Path, ct_file: Path, kinds: tuple[str, ...] | None = None) -> list[Path]:
    """Write the non-CT objects of a study sharing ``ct_file``'s patient and study; returns the paths.

    ``kinds`` chooses among ``rtstruct``, ``sc``, ``pdf``, ``kos``, ``gsps`` and ``mr`` (default: all)."""
    makers = {
        "rtstruct": rt_structure_set,
        "sc": secondary_capture,
        "pdf": encapsulated_pdf,
        "kos": key_object_selection,
        "gsps": presentation_state,
        "mr": mr_image,
    }
    ct = pydicom.dcmread(ct_file, stop_before_pixels=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in kinds or tuple(makers):
        ds = makers[kind](ct)
        path = out_dir / f"{kind}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
