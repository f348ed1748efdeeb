"""Hostile DICOM files for the hardening tests (issue 16): deflate bombs written in constant memory.

``deflate_bomb(src, dst, inflated_bytes)`` rewrites the DICOM file ``src`` (any data set: a CT slice, an RTSTRUCT)
in Deflated Explicit VR Little Endian with one extra private OB element (7FE1,1000) of ``inflated_bytes``
zeros: the file is about ``inflated_bytes / 1000`` bytes on disk. The element is streamed through the compressor,
never held in memory.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian


def _encoded_body(src: Path) -> bytes:
    ds = pydicom.dcmread(src)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return buf.getvalue()


def deflate_bomb(src: Path, dst: Path, inflated_bytes: int) -> Path:
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = _encoded_body(src)
    # a private OB element after (7FE0,0010) Pixel Data (its creator (7FE1,0010) first)
    n = inflated_bytes - inflated_bytes % 2
    creator = struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", 12) + b"PAROTID TEST"
    pad_header = creator + struct.pack("<HH2sHI", 0x7FE1, 0x1000, b"OB", 0, n)
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(dst, "wb") as fp:
        fp.write(b"\0" * 128 + b"DICM")
        mbuf = DicomBytesIO()
        mbuf.is_little_endian, mbuf.is_implicit_VR = True, False
        write_file_meta_info(mbuf, meta, enforce_standard=True)
        fp.write(mbuf.getvalue())
        fp.write(comp.compress(body + pad_header))
        zeros = b"\0" * (1 << 22)
        left = n
        while left:
            k = min(left, len(zeros))
            fp.write(comp.compress(zeros[:k]))
            left -= k
        fp.write(comp.flush())
    return dst
