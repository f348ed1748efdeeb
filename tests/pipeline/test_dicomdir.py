"""DICOMDIR as input: the files its records reference are read (a medium written by pydicom's FileSet, the way
a PACS export CD looks); a DICOMDIR whose files are missing, an unreadable one, or one without CT get typed
errors naming the DICOMDIR, never the old "only RTSTRUCT / RTPLAN / SR" hint."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from service.cli import main
from service.errors import ErrorCode, InputError
from service.pipeline.series import load_series
from tests.dicom_factory import write_ct_series
from tests.study_factory import write_study_companions

SHAPE = (6, 20, 24)
SPACING = (2.5, 1.5, 1.5)


def _medium(tmp_path: Path, n_series: int = 1, companions: bool = True) -> tuple[Path, list[np.ndarray], list[str]]:
    """A File-set in ``tmp_path/medium`` with ``n_series`` CT series (+ an RTSTRUCT and an SC) and its DICOMDIR."""
    fs = FileSet()
    arrays, uids = [], []
    for s in range(n_series):
        hu = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 300 + 100 * s).astype(np.float32)
        files = write_ct_series(tmp_path / f"src{s}", hu, SPACING, (0.0, 0.0, 0.0), "HFS")
        for f in files:
            fs.add(f)
        if companions and s == 0:
            for f in write_study_companions(tmp_path / "others", files[0], ("rtstruct", "sc")):
                fs.add(f)
        arrays.append(hu)
        uids.append(str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID))
    medium = tmp_path / "medium"
    fs.write(medium)
    return medium / "DICOMDIR", arrays, uids


def test_a_dicomdir_given_as_input_loads_the_ct_series_it_references(tmp_path: Path) -> None:
    dicomdir, (hu,), (uid,) = _medium(tmp_path)
    assert not any(p.name.startswith("CT") for p in dicomdir.parent.rglob("*"))  # renamed on the medium
    volume = load_series(dicomdir)
    assert volume.info is not None and volume.info.series_instance_uid == uid
    np.testing.assert_array_equal(volume.array_zyx, hu)
    # the medium's folder gives the same series (the DICOMDIR is one more non-image object there)
    np.testing.assert_array_equal(load_series(dicomdir.parent).array_zyx, hu)


def test_a_dicomdir_with_two_series_lists_them_and_one_can_be_chosen(tmp_path: Path) -> None:
    dicomdir, arrays, uids = _medium(tmp_path, n_series=2, companions=False)
    with pytest.raises(InputError) as err:
        load_series(dicomdir)
    assert err.value.code == ErrorCode.MULTIPLE_SERIES and all(u in err.value.message for u in uids)
    np.testing.assert_array_equal(load_series(dicomdir, series_uid=uids[1]).array_zyx, arrays[1])


def test_a_dicomdir_without_its_files_is_a_typed_error_naming_it(tmp_path: Path) -> None:
    dicomdir, _, _ = _medium(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(dicomdir, alone / "DICOMDIR")
    with pytest.raises(InputError) as err:
        load_series(alone / "DICOMDIR")
    assert err.value.code == ErrorCode.CORRUPT_FILE
    assert str(alone / "DICOMDIR") in err.value.message and "do not exist" in err.value.message
    # the folder holding only the DICOMDIR: no images, and the hint says what a DICOMDIR is
    with pytest.raises(InputError) as err:
        load_series(alone)
    assert err.value.code == ErrorCode.NO_CT_SERIES
    assert "Media Storage Directory Storage" in err.value.message and "DICOMDIR" in err.value.message
    assert "RTPLAN" not in err.value.message


def test_a_damaged_dicomdir_is_corrupt_file(tmp_path: Path) -> None:
    dicomdir, _, _ = _medium(tmp_path)
    ds = pydicom.dcmread(dicomdir)
    del ds.DirectoryRecordSequence
    bad = tmp_path / "bad" / "DICOMDIR"
    bad.parent.mkdir()
    ds.save_as(bad)
    with pytest.raises(InputError) as err:
        load_series(bad)
    assert err.value.code == ErrorCode.CORRUPT_FILE and str(bad) in err.value.message


def test_the_cli_takes_a_dicomdir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dicomdir, _, _ = _medium(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(dicomdir, alone / "DICOMDIR")
    rc = main(["segment", str(alone / "DICOMDIR"), "--output", str(tmp_path / "RS.dcm"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error[CORRUPT_FILE]:") and "DICOMDIR" in err[-1]
    assert not (tmp_path / "RS.dcm").exists()
