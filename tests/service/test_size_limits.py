"""Series size at the door (issue 16.4): the memory the pipeline needs, from the headers only, against the memory
budget; a JPEG 2000 codestream whose own size disagrees with Rows/Columns is refused before it is decoded.

Memory-bound checks run the readers in a subprocess under RLIMIT_DATA (``tests.memlimit``), never timings.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tests import dicom_variants as dv
from tests.corpus.series_cases import write_series
from tests.memlimit import run_limited


def big_deflated_series(folder: Path, n: int = 16, size: int = 4096) -> list[Path]:
    """``n`` deflated slices of ``size`` x ``size`` zeros (32 MiB each inflated, a few tens of KB on disk)."""
    files = write_series(folder, n_slices=n)
    zeros = bytes(size * size * 2)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = ["0.2", "0.2"]  # a plausible 819 mm field of view
        ds.PixelData = zeros
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(f, enforce_file_format=True)
    return files


@pytest.fixture(scope="module")
def big_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("big")
    big_deflated_series(d / "ct")
    return d / "ct"


CHECK = """
import sys
from pathlib import Path
from service.errors import InputError
from service.jobs.ingest import check_series
from service.pipeline.series import load_series
limit_memory()
try:
    if sys.argv[2] == "door":
        check_series(Path(sys.argv[1]), series_uid=None, min_slices=1, model_spacing_mm_zyx=(2.5, 4.0, 4.0))
    else:
        load_series(Path(sys.argv[1]), model_spacing_mm_zyx=(2.5, 4.0, 4.0))
    print("ACCEPTED")
except InputError as exc:
    print("CODE", exc.code)
except MemoryError:
    print("MemoryError")
"""


@pytest.mark.parametrize("where", ["door", "worker"])
def test_sixteen_4096_slices_refused_from_headers_under_a_memory_limit(where, big_series, monkeypatch):
    """0.7 MB on the wire, 268 M voxels: far above a 2 GiB budget, refused before any pixel is decoded."""
    monkeypatch.setenv("PAROTID_MEMORY_BUDGET_MB", "2048")
    done = run_limited(CHECK, str(big_series), where)
    lines = done.stdout.strip().splitlines()
    assert lines[-1:] == ["CODE TOO_LARGE"], done.stdout + done.stderr[-2000:]


def test_realistic_series_fits_the_default_budget():
    from service.pipeline.budget import DEFAULT_MEMORY_BUDGET_MB, estimated_bytes, model_grid_shape

    shape, spacing = (400, 512, 512), (1.0, 0.98, 0.98)  # a long head-and-neck CT
    model = int(np.prod(model_grid_shape(shape, spacing, (2.5, 4.0, 4.0))))
    assert estimated_bytes(int(np.prod(shape)), model) < DEFAULT_MEMORY_BUDGET_MB * 2**20


def _forge_j2k_size(path: Path, size: int) -> None:
    ds = pydicom.dcmread(path)
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    frame = bytearray(frames[0])
    at = frame.find(b"\xff\x4f\xff\x51")
    frame[at + 8 : at + 16] = struct.pack(">II", size, size)
    ds.PixelData = pydicom.encaps.encapsulate([bytes(frame)])
    ds.save_as(path, enforce_file_format=True)


J2K = """
import sys
from pathlib import Path
from service.errors import InputError
from service.pipeline.series import load_series
limit_memory()
try:
    load_series(Path(sys.argv[1]))
    print("ACCEPTED")
except InputError as exc:
    print("CODE", exc.code, "codestream" in exc.message and "not decoded" in exc.message)
except MemoryError:
    print("MemoryError")
"""


def test_j2k_codestream_larger_than_rows_columns_is_not_decoded(tmp_path):
    files = write_series(tmp_path / "ct")
    dv.compress(files, "j2k-lossless")
    _forge_j2k_size(files[3], 16384)
    done = run_limited(J2K, str(tmp_path / "ct"))
    assert done.stdout.strip().splitlines()[-1:] == ["CODE PIXEL_DATA_ERROR True"], done.stdout + done.stderr[-2000:]
