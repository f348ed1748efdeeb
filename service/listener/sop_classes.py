"""The storage SOP classes the listener accepts, and which of them it keeps.

A PACS or a modality sends a *study*, not a series: besides the CT it holds earlier structure sets, plans and
doses, scanner screenshots (secondary capture dose pages), reports, key-object selections and presentation states.
If a storage SCP refuses one of these presentation contexts, most senders fail the whole send (Orthanc:
"Cannot transcode ... to one of [ ]", HTTP 500). So the listener accepts every storage SOP class in
``DROPPED_SOP_CLASSES`` in every transfer syntax pynetdicom knows (a dropped object is never decoded: the SOP class
comes from the C-STORE request's (0000,0002) Affected SOP Class UID), answers Success, keeps nothing of it and counts
it in the association's audit line by SOP class name. Only CT Image Storage is kept and processed.

The list follows what PACS and modalities commonly send (DICOM PS3.4 Annex B); pynetdicom's
``AllStoragePresentationContexts`` would accept all ~130 storage classes but each peer may propose at most 128
presentation contexts anyway, and an explicit list keeps the audit names readable.
"""

from __future__ import annotations

from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")

# Storage SOP classes accepted and dropped (Success status, an audit count, nothing kept).
DROPPED_SOP_CLASSES: tuple[UID, ...] = tuple(
    UID(u)
    for u in (
        # images of other modalities and other CT objects
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage (multi-frame: not processed)
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
        "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image Storage
        "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET Image Storage
        "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image Storage
        "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
        "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
        "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image Storage
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis Image Storage
        # radiotherapy
        "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image Storage
        "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose Storage
        "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set Storage
        "1.2.840.10008.5.1.4.1.1.481.4",  # RT Beams Treatment Record Storage
        "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan Storage
        "1.2.840.10008.5.1.4.1.1.481.6",  # RT Brachy Treatment Record Storage
        "1.2.840.10008.5.1.4.1.1.481.7",  # RT Treatment Summary Record Storage
        "1.2.840.10008.5.1.4.1.1.481.8",  # RT Ion Plan Storage
        "1.2.840.10008.5.1.4.1.1.481.9",  # RT Ion Beams Treatment Record Storage
        "1.2.840.10008.5.1.4.1.1.66",  # Raw Data Storage
        "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration Storage
        "1.2.840.10008.5.1.4.1.1.66.3",  # Deformable Spatial Registration Storage
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.66.5",  # Surface Segmentation Storage
        # secondary capture (scanner dose pages, screenshots)
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture Image Storage
        # structured reports, key objects, documents
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR Storage
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR Storage
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR Storage
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR Storage
        "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection Document Storage
        "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR Storage
        "1.2.840.10008.5.1.4.1.1.88.68",  # Radiopharmaceutical Radiation Dose SR Storage
        "1.2.840.10008.5.1.4.1.1.88.71",  # Acquisition Context SR Storage
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF Storage
        "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA Storage
        # presentation states
        "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State Storage
        "1.2.840.10008.5.1.4.1.1.11.2",  # Color Softcopy Presentation State Storage
        "1.2.840.10008.5.1.4.1.1.11.4",  # Blending Softcopy Presentation State Storage
        # vendor-private: Siemens scanners put their protocol objects in the study
        "1.3.12.2.1107.5.9.1",  # Siemens CSA Non-Image Storage
    )
)

# Transfer syntaxes accepted for dropped objects: all pynetdicom knows (they are never decoded).
DROPPED_TRANSFER_SYNTAXES: list[str] = list(ALL_TRANSFER_SYNTAXES)


def sop_class_label(uid: str) -> str:
    """The standard's name of a SOP class (e.g. "RT Structure Set Storage"), else the UID itself."""
    name = UID(uid).name
    return name if name and name != uid else uid
