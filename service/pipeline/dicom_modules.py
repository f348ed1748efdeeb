"""The DICOM modules a derived object (the RTSTRUCT) copies from its source CT: one definition, used by the series
loader (what it keeps from the CT) and the RTSTRUCT writer (what it writes), so the two cannot disagree.

The tables follow DICOM PS3.3 (attribute keyword, type), in the manner of highdicom's module tables and its
``SOPClass.copy_patient_and_study_information``; they are written out here because highdicom keeps its tables in
a private module (``highdicom._modules``) and the service needs five of them, not the library:

- C.7.1.1 Patient, C.7.1.3 Clinical Trial Subject
- C.7.2.1 General Study, C.7.2.2 Patient Study, C.7.2.3 Clinical Trial Study
- C.7.4.1 Frame of Reference

(0008,0005) Specific Character Set travels with them: the text values are kept as pydicom decoded them (Python
``str``/``PersonName``) and the copy declares the CT's character set, so pydicom encodes them back in that set
when the derived object is written (ISO_IR 192 UTF-8, ISO_IR 100 Latin-1, ISO 2022 code extensions, ...).
Type 1 and 2 attributes are always written (type 2 empty when the CT lacks them); type 3 only when present.
General Equipment (C.7.5.1) is not copied: it describes the equipment that made the derived object (this service).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Literal

from pydicom.dataset import Dataset

AttrType = Literal["1", "1C", "2", "2C", "3"]
Module = tuple[tuple[str, AttrType], ...]

PATIENT: Module = (
    ("PatientName", "2"),
    ("PatientID", "2"),
    ("IssuerOfPatientID", "3"),
    ("IssuerOfPatientIDQualifiersSequence", "3"),
    ("TypeOfPatientID", "3"),
    ("PatientBirthDate", "2"),
    ("PatientBirthDateInAlternativeCalendar", "3"),
    ("PatientAlternativeCalendar", "1C"),
    ("PatientBirthTime", "3"),
    ("PatientSex", "2"),
    ("QualityControlSubject", "3"),
    ("OtherPatientIDsSequence", "3"),
    ("OtherPatientNames", "3"),
    ("PatientBirthName", "3"),
    ("PatientMotherBirthName", "3"),
    ("EthnicGroup", "3"),
    ("PatientComments", "3"),
    ("PatientSpeciesDescription", "1C"),
    ("PatientSpeciesCodeSequence", "1C"),
    ("PatientBreedDescription", "2C"),
    ("PatientBreedCodeSequence", "2C"),
    ("BreedRegistrationSequence", "2C"),
    ("StrainDescription", "3"),
    ("ResponsiblePerson", "2C"),
    ("ResponsiblePersonRole", "1C"),
    ("ResponsibleOrganization", "2C"),
    ("PatientIdentityRemoved", "3"),
    ("DeidentificationMethod", "1C"),
    ("DeidentificationMethodCodeSequence", "1C"),
)

CLINICAL_TRIAL_SUBJECT: Module = (
    ("ClinicalTrialSponsorName", "1"),
    ("ClinicalTrialProtocolID", "1"),
    ("ClinicalTrialProtocolName", "2"),
    ("ClinicalTrialSiteID", "2"),
    ("ClinicalTrialSiteName", "2"),
    ("ClinicalTrialSubjectID", "1C"),
    ("ClinicalTrialSubjectReadingID", "1C"),
    ("ClinicalTrialProtocolEthicsCommitteeName", "1C"),
    ("ClinicalTrialProtocolEthicsCommitteeApprovalNumber", "3"),
)

GENERAL_STUDY: Module = (
    ("StudyInstanceUID", "1"),
    ("StudyDate", "2"),
    ("StudyTime", "2"),
    ("ReferringPhysicianName", "2"),
    ("ReferringPhysicianIdentificationSequence", "3"),
    ("ConsultingPhysicianName", "3"),
    ("StudyID", "2"),
    ("AccessionNumber", "2"),
    ("IssuerOfAccessionNumberSequence", "3"),
    ("StudyDescription", "3"),
    ("PhysiciansOfRecord", "3"),
    ("NameOfPhysiciansReadingStudy", "3"),
    ("RequestingService", "3"),
    ("ProcedureCodeSequence", "3"),
    ("ReasonForPerformedProcedureCodeSequence", "3"),
)

PATIENT_STUDY: Module = (
    ("AdmittingDiagnosesDescription", "3"),
    ("AdmittingDiagnosesCodeSequence", "3"),
    ("PatientAge", "3"),
    ("PatientSize", "3"),
    ("PatientWeight", "3"),
    ("PatientBodyMassIndex", "3"),
    ("MeasuredAPDimension", "3"),
    ("MeasuredLateralDimension", "3"),
    ("Occupation", "3"),
    ("AdditionalPatientHistory", "3"),
    ("AdmissionID", "3"),
    ("IssuerOfAdmissionIDSequence", "3"),
    ("ServiceEpisodeID", "3"),
    ("ServiceEpisodeDescription", "3"),
    ("PatientSexNeutered", "2C"),
    ("SmokingStatus", "3"),
    ("PregnancyStatus", "3"),
)

CLINICAL_TRIAL_STUDY: Module = (
    ("ClinicalTrialTimePointID", "2"),
    ("ClinicalTrialTimePointDescription", "3"),
    ("ConsentForClinicalTrialUseSequence", "3"),
)

FRAME_OF_REFERENCE: Module = (
    ("FrameOfReferenceUID", "1"),
    ("PositionReferenceIndicator", "2"),
)

# The modules an RTSTRUCT shares with its CT, in the order they are written. The clinical-trial modules are
# written only when the CT has them (their type 1/2 attributes apply when the module is present).
COPIED_MODULES: tuple[Module, ...] = (
    PATIENT,
    CLINICAL_TRIAL_SUBJECT,
    GENERAL_STUDY,
    PATIENT_STUDY,
    CLINICAL_TRIAL_STUDY,
    FRAME_OF_REFERENCE,
)
_OPTIONAL_MODULES = (CLINICAL_TRIAL_SUBJECT, CLINICAL_TRIAL_STUDY)
COPIED_KEYWORDS: tuple[str, ...] = ("SpecificCharacterSet", *(kw for m in COPIED_MODULES for kw, _ in m))


def copy_module_attributes(source: Dataset) -> dict[str, object]:
    """The values of every attribute of ``COPIED_KEYWORDS`` present in ``source`` (a CT header), keyword -> value.

    Values are deep copies of what pydicom decoded with the source's (0008,0005) Specific Character Set, which is
    included (as read: a string or a list for a multi-valued set). Absent attributes are left out, never invented.
    """
    out: dict[str, object] = {}
    for keyword in COPIED_KEYWORDS:
        if keyword in source:
            out[keyword] = copy.deepcopy(source[keyword].value)
    return out


def apply_module_attributes(target: Dataset, attrs: Mapping[str, object]) -> None:
    """Write the copied modules into ``target`` (the derived object) from ``attrs`` (``copy_module_attributes``).

    Type 2 attributes are written even when absent in ``attrs`` (empty); a missing type 1 is the caller's to set
    (the UIDs, from ``SeriesInfo``); type 3 and conditional ones only when present.
    The clinical-trial modules are written only when the source had any of their attributes.
    """
    charset = attrs.get("SpecificCharacterSet")
    if charset:
        target.SpecificCharacterSet = copy.deepcopy(charset)
    for module in COPIED_MODULES:
        present = any(attrs.get(kw) is not None for kw, _ in module)
        if module in _OPTIONAL_MODULES and not present:
            continue
        for keyword, attr_type in module:
            value = attrs.get(keyword)
            if value is not None:
                setattr(target, keyword, copy.deepcopy(value))
            elif attr_type == "2" and keyword not in target:
                setattr(target, keyword, "")
