"""Derive bad, unusual and compressed variants from series written by ``tests.dicom_factory``.

Every helper edits real DICOM files in place (write to a temporary name, then ``os.replace``) or writes new ones,
so loaders are tested on what a scanner, an archive or a broken export would actually send.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    PYDICOM_IMPLEMENTATION_UID,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    MRImageStorage,
    RLELossless,
    RTStructureSetStorage,
    generate_uid,
)

# name -> transfer syntax UID; "dcmcjpeg" ones need DCMTK (call conftest.require_tool("dcmcjpeg") first)
COMPRESSIONS = {
    "rle": RLELossless,  # 1.2.840.10008.1.2.5, pydicom's encoder
    "j2k-lossless": JPEG2000Lossless,  # 1.2.840.10008.1.2.4.90, pylibjpeg-openjpeg
    "j2k": JPEG2000,  # 1.2.840.10008.1.2.4.91, compression ratio 1 (numerically lossless)
    "jpeg-lossless-sv1": JPEGLosslessSV1,  # 1.2.840.10008.1.2.4.70, dcmcjpeg +e1
    "jpeg-lossless": JPEGLossless,  # 1.2.840.10008.1.2.4.57, dcmcjpeg +el
}
DCMCJPEG_OPTIONS = {"jpeg-lossless-sv1": "+e1", "jpeg-lossless": "+el"}


def _save(ds: Dataset, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    ds.save_as(tmp, enforce_file_format=False)
    os.replace(tmp, path)


def edit(paths: Path | Iterable[Path], change: Callable[[Dataset], object]) -> None:
    """Read each file (with pixels), apply ``change(ds)`` and write it back in place."""
    for path in [paths] if isinstance(paths, Path) else list(paths):
        ds = pydicom.dcmread(path)
        change(ds)
        _save(ds, path)


def set_attrs(paths: Path | Iterable[Path], **values: object) -> None:
    """Set data set attributes by keyword on each file (None deletes the attribute)."""

    def change(ds: Dataset) -> None:
        for keyword, value in values.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)

    edit(paths, change)


def set_pixels(path: Path, stored: np.ndarray) -> None:
    """Replace the stored pixel values (and Rows/Columns) of an uncompressed file."""

    def change(ds: Dataset) -> None:
        arr = np.ascontiguousarray(stored.astype(np.int16))
        ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
        ds.PixelData = arr.tobytes()

    edit(path, change)


def position(path: Path) -> np.ndarray:
    return np.array([float(v) for v in pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient])


def set_position(path: Path, xyz: Iterable[float]) -> None:
    set_attrs(path, ImagePositionPatient=[f"{v:.6g}" for v in xyz])


def pixel_lps(ds: Dataset) -> np.ndarray:
    """(rows, cols, 3) LPS centre of every pixel by PS3.3 C.7.6.2.1.1: P + c*dc*row_dir + r*dr*col_dir."""
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    r = np.arange(int(ds.Rows))[:, None, None]
    c = np.arange(int(ds.Columns))[None, :, None]
    return ipp + c * dc * iop[:3] + r * dr * iop[3:]


def compress(paths: Iterable[Path], name: str) -> None:
    """Re-encode files with one of ``COMPRESSIONS`` (losslessly)."""
    for path in paths:
        if name in DCMCJPEG_OPTIONS:
            tmp = path.with_name(path.name + ".jpg.tmp")
            subprocess.run(["dcmcjpeg", DCMCJPEG_OPTIONS[name], str(path), str(tmp)], check=True, capture_output=True)
            os.replace(tmp, path)
            continue
        ds = pydicom.dcmread(path)
        if name == "j2k":
            ds.compress(JPEG2000, j2k_cr=[1])
        else:
            ds.compress(COMPRESSIONS[name])
        _save(ds, path)


def transpose_images(paths: Iterable[Path]) -> None:
    """Store each axial image transposed: rows run along the old row direction (same patient geometry)."""

    def change(ds: Dataset) -> None:
        iop = list(ds.ImageOrientationPatient)
        dr, dc = ds.PixelSpacing
        arr = np.ascontiguousarray(ds.pixel_array.T)
        ds.ImageOrientationPatient = iop[3:] + iop[:3]
        ds.PixelSpacing = [dc, dr]
        ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
        ds.PixelData = arr.tobytes()

    edit(paths, change)


def truncate(path: Path, keep_bytes: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def copy_as_new_instance(src: Path, dst: Path) -> None:
    """A copy with a new SOP Instance UID (same position): a duplicate slice."""
    shutil.copyfile(src, dst)
    uid = generate_uid()

    def change(ds: Dataset) -> None:
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid

    edit(dst, change)


def convert_modality(paths: Iterable[Path], sop_class: str = MRImageStorage, modality: str = "MR") -> None:
    """Relabel images as another modality (e.g. an MR series)."""

    def change(ds: Dataset) -> None:
        ds.SOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.Modality = modality

    edit(paths, change)


def _new_file(path: Path, sop_class: str, like: Dataset | None, syntax: str = ExplicitVRLittleEndian) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    if like is not None:
        for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
            if keyword in like:
                setattr(ds, keyword, like.data_element(keyword).value)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def write_rtstruct_like(path: Path, like: Path | None = None) -> Path:
    """A minimal non-image object (RT Structure Set) in the same study, as a planning system would add."""
    ref = pydicom.dcmread(like, stop_before_pixels=True) if like else None
    ds = _new_file(path, RTStructureSetStorage, ref)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "other"
    ds.StructureSetROISequence = []
    ds.save_as(path, enforce_file_format=True)
    return path


def write_enhanced_ct(path: Path, sources: list[Path]) -> Path:
    """The given slices as one multi-frame Enhanced CT Image Storage object (headers simplified)."""
    first = pydicom.dcmread(sources[0])
    ds = _new_file(path, EnhancedCTImageStorage, first)
    frames = np.stack([pydicom.dcmread(p).pixel_array for p in sources])
    ds.Modality = "CT"
    ds.SeriesInstanceUID = generate_uid()
    ds.NumberOfFrames = len(sources)
    ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
    for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit"):
        setattr(ds, keyword, first.data_element(keyword).value)
    ds.PixelRepresentation = 1
    ds.PixelData = np.ascontiguousarray(frames.astype(np.int16)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_bare_dataset(src: Path, dst: Path) -> None:
    """``src`` re-written without preamble and File Meta Information (implicit VR little endian data set only)."""
    ds = pydicom.dcmread(src)
    ds.preamble = None
    del ds.file_meta
    ds.save_as(dst, implicit_vr=True, little_endian=True, enforce_file_format=False)


def write_junk(folder: Path) -> list[Path]:
    """Files that are not DICOM: text, random bytes, random bytes that start like a bare data set, empty."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    files = {
        "README.txt": b"exported by some PACS\n" * 10,
        "thumbs.db": rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "looks_like_dicom": b"\x08\x00\x05\x00" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes(),
        "empty.dcm": b"",
        ".DS_Store": b"\0\0\0\1Bud1" + bytes(200),
    }
    out = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out.append(folder / name)
    return out
