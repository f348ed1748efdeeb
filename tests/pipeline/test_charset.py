"""Character sets and the copied modules: a CT in UTF-8 (ISO_IR 192), Latin-1 (ISO_IR 100) or ISO 2022 code
extensions (ISO 2022 IR 6\\ISO 2022 IR 87) gives an RTSTRUCT declaring the same (0008,0005) Specific Character Set
with the patient's name encoded exactly as in the CT, read back by DCMTK's dcmdump; the patient, study, clinical
trial and frame-of-reference modules are copied from the one table (``service.pipeline.dicom_modules``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from service.pipeline.dicom_modules import COPIED_KEYWORDS, apply_module_attributes, copy_module_attributes
from service.pipeline.rtstruct import write_rtstruct
from service.pipeline.series import load_series
from tests.conftest import require_tool
from tests.dicom_factory import write_ct_series

SHAPE = (4, 24, 24)
SPACING = (3.0, 2.0, 2.0)

CASES = {
    "utf8-japanese": ("ISO_IR 192", "山田^太郎", "山田^太郎".encode()),
    "latin1-german": ("ISO_IR 100", "Müller^Jürgen", b"M\xfcller^J\xfcrgen"),
    "iso2022-japanese": (
        ["ISO 2022 IR 6", "ISO 2022 IR 87"],
        "Yamada^Tarou=山田^太郎=やまだ^たろう",
        # PS3.5 Annex H.3.1, the standard's own example of this name
        b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
    ),
}


def _rtstruct_for(tmp_path: Path, charset, name: str, extra: dict | None = None) -> tuple[Path, Path]:
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    files = write_ct_series(
        tmp_path / "ct", hu, SPACING, patient_name=name, specific_character_set=charset, extra_attrs=extra
    )
    ct = load_series(tmp_path / "ct")
    mask = np.zeros(SHAPE, dtype=bool)
    mask[1:3, 8:14, 6:12] = True
    rs = tmp_path / "RS.dcm"
    write_rtstruct(ct, {"Parotid_L": mask}, rs, model_name="m", model_version="1")
    return files[0], rs


def _raw_value(path: Path, keyword: str) -> bytes:
    """The element's value bytes as stored in the file (no decoding)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    raw = ds.get_item(keyword)
    assert raw is not None, keyword
    return bytes(raw.value).rstrip(b" ")


def _dcmdump_line(path: Path, tag: str, to_utf8: bool = True) -> bytes:
    exe = require_tool("dcmdump")
    options = ["+U8"] if to_utf8 else []
    out = subprocess.run([exe, *options, "+P", tag, str(path)], capture_output=True, check=True, timeout=60)
    return out.stdout.strip()


def _dcmdump_name(path: Path, charset) -> str:
    """(0010,0010) as DCMTK reads it: converted to UTF-8 by DCMTK (``+U8``) where its iconv build can, else the
    raw ISO 2022 bytes it prints, decoded here with Python's ``iso2022_jp`` codec (Debian's DCMTK uses glibc
    iconv, which has no 'ISO 2022 IR 87')."""
    if isinstance(charset, list):
        line = _dcmdump_line(path, "0010,0010", to_utf8=False)
        return line[line.index(b"[") + 1 : line.rindex(b"]")].decode("iso2022_jp")
    line = _dcmdump_line(path, "0010,0010").decode("utf-8")
    return line[line.index("[") + 1 : line.rindex("]")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_character_set_and_name_are_carried_from_the_ct_and_read_back_by_dcmdump(tmp_path: Path, case: str):
    charset, name, expected_bytes = CASES[case]
    ct_file, rs = _rtstruct_for(tmp_path, charset, name)
    ds = pydicom.dcmread(rs)
    expected_set = charset if isinstance(charset, list) else [charset]
    got_set = ds.SpecificCharacterSet
    assert (list(got_set) if isinstance(got_set, pydicom.multival.MultiValue) else [got_set]) == expected_set
    assert str(ds.PatientName) == name
    raw_rs, raw_ct = _raw_value(rs, "PatientName"), _raw_value(ct_file, "PatientName")
    assert raw_rs == raw_ct  # the same bytes as the scanner wrote
    assert raw_rs == expected_bytes
    # an independent reader: DCMTK converts the declared character set to UTF-8
    for path in (ct_file, rs):
        assert _dcmdump_name(path, charset) == name, path.name
        charset_line = _dcmdump_line(path, "0008,0005", to_utf8=False).decode("ascii")
        assert charset_line.split("[")[1].split("]")[0] == "\\".join(expected_set), charset_line


def test_every_module_attribute_of_the_ct_is_copied_once_from_the_table(tmp_path: Path):
    other_id = Dataset()
    other_id.PatientID = "OTHER-7"
    other_id.IssuerOfPatientID = "HOSP-B"
    extra = {
        "IssuerOfPatientID": "HOSP-A",
        "OtherPatientIDsSequence": Sequence([other_id]),
        "PatientAge": "061Y",
        "PatientWeight": "72.5",
        "StudyDescription": "Kopf-Hals Planung",
        "ClinicalTrialSponsorName": "Sponsor",
        "ClinicalTrialProtocolID": "P-1",
        "ClinicalTrialTimePointID": "T0",
        "PositionReferenceIndicator": "NASION",
    }
    ct_file, rs = _rtstruct_for(tmp_path, "ISO_IR 100", "Müller^Jürgen", extra)
    ct = pydicom.dcmread(ct_file, stop_before_pixels=True)
    ds = pydicom.dcmread(rs)
    for keyword in COPIED_KEYWORDS:
        if keyword in ct:
            assert ds[keyword].value == ct[keyword].value, keyword
    assert ds.OtherPatientIDsSequence[0].PatientID == "OTHER-7"
    # type 2 clinical-trial attributes are written empty once the module is present; absent modules stay absent
    assert ds.ClinicalTrialProtocolName == "" and ds.ClinicalTrialSiteID == ""
    assert "AdmittingDiagnosesDescription" not in ds


def test_type_2_attributes_are_written_empty_and_absent_ones_not_invented():
    ct = Dataset()
    ct.PatientID = "X"
    attrs = copy_module_attributes(ct)
    assert attrs == {"PatientID": "X"}
    out = Dataset()
    apply_module_attributes(out, attrs)
    assert out.PatientName == "" and out.StudyDate == "" and out.AccessionNumber == ""
    assert out.PositionReferenceIndicator == ""
    assert "SpecificCharacterSet" not in out and "StudyDescription" not in out
    assert "ClinicalTrialProtocolName" not in out and "StudyInstanceUID" not in out  # type 1: the caller's
