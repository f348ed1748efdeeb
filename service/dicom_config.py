"""Process-wide pydicom settings every entry point shares (imported by ``service/__init__.py``).

pydicom validates values when it converts them and *warns with the value* (``Invalid value for VR DA:
'ZZTOPBIRTH1'``): a malformed PatientBirthDate, PatientName or any DA/TM/UI/CS value then lands in the API, worker
and listener logs (issue 16). Validation is switched off for reading and writing; the pipeline checks what it
uses itself (``series_scan``/``series_geometry``: typed errors that name the attribute, never its value) and the
RTSTRUCT writer sanitises what it copies (``rtstruct_values``).
"""

from __future__ import annotations


def quiet_pydicom() -> None:
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
