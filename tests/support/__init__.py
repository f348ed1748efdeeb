"""Helpers shared by the tests (one copy each): ``net`` (free ports, polling), ``dicom`` (C-ECHO), ``zips``.

The benchmark scripts in ``bench/`` keep their own single copies (``bench/procs.py``, ``bench/chaos_common.py``,
``bench/chaos_dicom.py``): they run outside pytest and report a timeout instead of failing on it.
"""
