"""Check that a CT slice's pixels can be decoded, then decode them once into Hounsfield units.

Reads (0002,0010) Transfer Syntax UID, (0028,0002) Samples per Pixel, (0028,0004) Photometric Interpretation,
(0028,0010) Rows, (0028,0011) Columns, (0028,0008) Number of Frames, (0028,0100) Bits Allocated,
(0028,1052) Rescale Intercept, (0028,1053) Rescale Slope and (7FE0,0010) Pixel Data.
Compressed syntaxes (JPEG Lossless .57/.70, JPEG 2000 .90/.91, RLE Lossless, JPEG-LS, ...) are decoded by
pydicom's pixel handlers with the pylibjpeg plugins.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from service.errors import ErrorCode, InputError
from service.pipeline.series_geometry import read_numbers
from service.pipeline.series_scan import CtFile, read_dataset, tag_label


@dataclass(frozen=True)
class PixelFormat:
    transfer_syntax: UID
    rescale_slope: float
    rescale_intercept: float


def native_pixel_data_bytes(ds: Dataset) -> int | None:
    """The bytes of native (uncompressed) (7FE0,0010) Pixel Data that the Image Pixel attributes call for:
    (0028,0010) Rows x (0028,0011) Columns x (0028,0002) Samples per Pixel x (0028,0008) Number of Frames x
    (0028,0100) Bits Allocated / 8 (bits rounded up to whole bytes once, for 1-bit data), without the pad byte to an
    even length. None when Rows or Columns is missing or a value is not a non-negative integer (other checks
    report those). Only meaningful for native transfer syntaxes (an encapsulated Pixel Data has no fixed length).
    Shared by the loader and the DICOM listener's C-STORE check."""
    try:
        rows, cols = int(ds["Rows"].value), int(ds["Columns"].value)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (KeyError, TypeError, ValueError):
        return None
    if min(rows, cols, samples, frames, bits) < 0:
        return None
    n_values = rows * cols * samples * frames
    return n_values * ((bits + 7) // 8) if bits >= 8 else (n_values * bits + 7) // 8


def _syntax_label(ts: UID) -> str:
    return f"{ts} ({ts.name})" if ts.name != str(ts) else str(ts)


def check_pixel_format(f: CtFile) -> PixelFormat:
    """Refuse, before any decoding, what cannot become HU: unknown transfer syntax, colour, missing rescale."""
    ds, path = f.ds, f.path
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise InputError(
            ErrorCode.UNSUPPORTED_TRANSFER_SYNTAX,
            f"{path}: {tag_label('TransferSyntaxUID')} {_syntax_label(ts)} cannot be decoded; send the series "
            "uncompressed, or as JPEG Lossless, JPEG 2000 or RLE",
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise InputError(
            ErrorCode.UNSUPPORTED_TRANSFER_SYNTAX,
            f"{path}: no installed pixel decoder for {tag_label('TransferSyntaxUID')} {_syntax_label(ts)} ({missing})",
        )
    samples = ds.get("SamplesPerPixel", 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(
            ErrorCode.PIXEL_DATA_ERROR,
            f"{path}: a CT image must be greyscale; {tag_label('SamplesPerPixel')} is {samples} and "
            f"{tag_label('PhotometricInterpretation')} is '{photometric}'",
        )
    slope = read_numbers(ds, "RescaleSlope", 1, path)[0]
    intercept = read_numbers(ds, "RescaleIntercept", 1, path)[0]
    if slope == 0:
        raise InputError(ErrorCode.MISSING_ATTRIBUTE, f"{path}: invalid {tag_label('RescaleSlope')} 0")
    return PixelFormat(ts, slope, intercept)


def read_hu_slice(path: Path, fmt: PixelFormat, rows: int, cols: int) -> np.ndarray:
    """Read ``path`` with its pixels, decode them once and apply Rescale Slope/Intercept: (rows, cols) float32 HU."""
    ds, _ = read_dataset(path, stop_before_pixels=False)
    if ds is None:
        raise InputError(ErrorCode.CORRUPT_FILE, f"{path}: no longer readable as DICOM")
    if "PixelData" not in ds:
        raise InputError(ErrorCode.CORRUPT_FILE, f"{path}: no (7FE0,0010) Pixel Data (truncated file?)")
    if not fmt.transfer_syntax.is_encapsulated:
        expected = native_pixel_data_bytes(ds)
        if expected is not None and len(ds.PixelData) < expected:
            raise InputError(
                ErrorCode.CORRUPT_FILE,
                f"{path}: (7FE0,0010) Pixel Data has {len(ds.PixelData)} bytes, {rows}x{cols} pixels of "
                f"{ds.get('BitsAllocated', 16)} bits need {expected} (truncated file?)",
            )
    if fmt.transfer_syntax in J2K_SYNTAXES:
        check_j2k_dimensions(path, ds, rows, cols)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoder plugins raise assorted types on bad streams
        raise InputError(
            ErrorCode.PIXEL_DATA_ERROR,
            f"{path}: (7FE0,0010) Pixel Data could not be decoded as {_syntax_label(fmt.transfer_syntax)}: {exc}",
        ) from exc
    if stored.shape != (rows, cols):
        raise InputError(
            ErrorCode.PIXEL_DATA_ERROR,
            f"{path}: decoded Pixel Data has shape {stored.shape}, {tag_label('Rows')}/{tag_label('Columns')} say "
            f"({rows}, {cols})",
        )
    hu = stored.astype(np.float64)
    if fmt.rescale_slope != 1.0:
        hu *= fmt.rescale_slope
    hu += fmt.rescale_intercept
    return hu.astype(np.float32)


J2K_SYNTAXES = {
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
}
_SOC_SIZ = b"\xff\x4f\xff\x51"


def j2k_size(frame: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG 2000 codestream's SIZ marker segment (ISO 15444-1 A.5.1): Ysiz - YOsiz,
    Xsiz - XOsiz; None when no SOC + SIZ is found in the first 64 KiB (a JP2 file wraps the codestream in boxes)."""
    at = frame.find(_SOC_SIZ, 0, 65536)
    if at < 0 or len(frame) < at + 4 + 2 + 2 + 16:
        return None
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", frame[at + 8 : at + 24])
    return ysiz - yo, xsiz - xo


def check_j2k_dimensions(path: Path, ds: Dataset, rows: int, cols: int) -> None:
    """Refuse a JPEG 2000 frame whose codestream declares another size than (0028,0010) Rows x (0028,0011)
    Columns before decoding it (a 16384 x 16384 codestream in a 128 x 128 image would be decoded in full)."""
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception as exc:  # noqa: BLE001 - malformed encapsulation
        raise InputError(
            ErrorCode.PIXEL_DATA_ERROR, f"{path}: (7FE0,0010) Pixel Data is not a valid encapsulated frame: {exc}"
        ) from exc
    size = j2k_size(frame)
    if size is None:
        raise InputError(
            ErrorCode.PIXEL_DATA_ERROR,
            f"{path}: (7FE0,0010) Pixel Data has no JPEG 2000 codestream header (SOC + SIZ marker segments)",
        )
    if size != (rows, cols):
        raise InputError(
            ErrorCode.PIXEL_DATA_ERROR,
            f"{path}: the JPEG 2000 codestream in (7FE0,0010) Pixel Data is {size[0]} x {size[1]} pixels, "
            f"{tag_label('Rows')} x {tag_label('Columns')} say {rows} x {cols}; not decoded",
        )
