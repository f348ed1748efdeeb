"""Values copied from the CT into the RTSTRUCT, made to conform to their VR (issue 16).

A CT may carry a PatientName of 10,005 characters, a StudyTime that is not a time or a lower-case CS: copied as
they are, the RTSTRUCT fails dciodvfy and a planning system may refuse it. ``conform_values`` returns, per
keyword, a value that fits its VR (PS3.5 6.2): over-long values are truncated to the VR's maximum (PN: per
component group; multi-valued strings: per value), control characters other than ESC are removed, and a DA, TM,
AS, DS, IS or CS value that does not match its VR's form is emptied (those attributes are Type 2 or 3). The
keywords changed are returned so that the QA report can say so (``notes``; never the values themselves).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue

MAX_CHARS = {"AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "IS": 12, "LO": 64, "SH": 16, "TM": 16, "UI": 64}
MAX_CHARS_SINGLE = {"LT": 10240, "ST": 1024, "UT": 2**32 - 2}  # one value; backslash allowed
PN_GROUP_CHARS = 64
_FORMS = {
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "AS": re.compile(r"\d{3}[DWMY]"),
    "DS": re.compile(r" *[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? *"),
    "IS": re.compile(r" *[+-]?\d+ *"),
    "CS": re.compile(r"[A-Z0-9 _]*"),
    "UI": re.compile(r"[0-9.]*"),
}
_CONTROL = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")  # ESC (0x1b) stays: ISO 2022 code extensions


def _vr(keyword: str) -> str | None:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def conform_value(vr: str, value: str) -> str:
    """``value`` made to fit ``vr`` (see the module docstring)."""
    text = _CONTROL.sub("", value)
    if vr in MAX_CHARS_SINGLE:
        return text[: MAX_CHARS_SINGLE[vr]]
    out = []
    for item in text.split("\\"):
        if vr == "PN":
            item = "=".join(group[:PN_GROUP_CHARS] for group in item.split("=")[:3])
        else:
            item = item[: MAX_CHARS.get(vr, 64)]
            form = _FORMS.get(vr)
            if form is not None and not form.fullmatch(item):
                item = ""
        out.append(item)
    return "\\".join(out)


def conform_values(attrs: Mapping[str, object]) -> tuple[dict[str, object], list[str]]:
    """Every value conformed to its keyword's VR (pydicom value types by their string form); sequences are kept as
    they are; a value that already conforms is returned unchanged (same object).
    Returns the values and the keywords whose value changed."""
    values: dict[str, object] = {}
    changed: list[str] = []
    for keyword, value in attrs.items():
        vr = _vr(keyword)
        if vr is None or vr == "SQ" or value is None or isinstance(value, bytes | list) and not value:
            values[keyword] = value
            continue
        text = "\\".join(str(v) for v in value) if isinstance(value, list | tuple | MultiValue) else str(value)
        fixed = conform_value(vr, text)
        if fixed != text:
            changed.append(keyword)
            values[keyword] = fixed
        else:
            values[keyword] = value
    return values, changed


def conformance_note(changed: list[str]) -> str:
    tags = ", ".join(f"({(t := tag_for_keyword(k) or 0) >> 16:04X},{t & 0xFFFF:04X}) {k}" for k in changed)
    return (
        f"values copied from the CT into the RTSTRUCT were shortened or emptied to fit their VR: {tags} "
        "(the CT's values break PS3.5; check the series' patient and study attributes)"
    )
