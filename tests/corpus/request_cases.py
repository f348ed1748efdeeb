"""HTTP-shaped corpus cases: files that are not DICOM, hostile archives, and malformed requests. Where a DICOM
counterpart exists (authentication -> the calling/called AE title checks) it is sent too; otherwise the case says
why it does not apply to DICOM.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tests import dicom_variants as dv
from tests.corpus.model import Case, DicomExpect, DicomSend, HttpCall, HttpExpect
from tests.corpus.series_cases import parts, write_series
from tests.support.zips import zip_bytes

# limits of the corpus' app (tests/corpus/conftest.py); the oversized cases are sized against them
MAX_UPLOAD_BYTES = 4 * 2**20
MAX_UPLOAD_FILES = 100
ZIP_MAX_RATIO = 50
EVIL_NAME = "parotid-corpus-evil"

NA_NOT_DICOM = "not DICOM: a DICOM peer cannot send it (C-STORE needs a SOP class and transfer syntax)"
NA_ARCHIVE = "DICOM carries single data sets, never archives"
NA_REQUEST = "HTTP request framing; DICOM has no such field (PDUs are framed by the association)"
NA_SIZE = (
    "no request size in DICOM: each instance is stored on its own, and the spool's free-disk watermark "
    "answers 0xA700 (make chaos, tests/listener)"
)


def _series_zip(d: Path, name=lambda n, p: f"series/{p.name}") -> bytes:
    files = write_series(d)
    return zip_bytes({name(n, p): p.read_bytes() for n, p in enumerate(files)})


def _zip_part(data: bytes, filename: str = "upload.zip") -> HttpCall:
    return HttpCall(files=[("files", (filename, data, "application/zip"))])


def _http_only(name: str, what: str, call: HttpCall, expect: HttpExpect, na: str) -> Case:
    return Case(name, what, call, expect, dicom_na=na)


def _bad(code: str = "BAD_UPLOAD") -> HttpExpect:
    return HttpExpect(400, code)


# ---------------------------------------------------------------------------------------------- not DICOM
def text_file(d: Path) -> Case:
    return _http_only(
        "text_file",
        "a text file",
        HttpCall(files=[("files", ("notes.txt", b"hello\n" * 50, "text/plain"))]),
        HttpExpect(422, "EMPTY_INPUT"),
        NA_NOT_DICOM,
    )


def random_bytes(d: Path) -> Case:
    data = np.random.default_rng(11).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    return _http_only(
        "random_bytes",
        "50 kB of random bytes named .dcm",
        HttpCall(files=[("files", ("image.dcm", data, "application/dicom"))]),
        HttpExpect(422, "EMPTY_INPUT"),
        NA_NOT_DICOM,
    )


def empty_file(d: Path) -> Case:
    call = HttpCall(files=[("files", ("empty.dcm", b"", "application/dicom"))])
    return _http_only("empty_file", "an empty file", call, HttpExpect(422, "EMPTY_INPUT"), NA_NOT_DICOM)


def series_with_junk(d: Path) -> Case:
    files = write_series(d / "ct") + dv.write_junk(d / "junk")
    return _http_only(
        "series_with_junk",
        "a valid series plus README.txt, thumbs.db, .DS_Store, an empty file",
        HttpCall(files=parts(files)),
        HttpExpect(202, None, "succeeded"),
        NA_NOT_DICOM,
    )


def traversal_filenames(d: Path) -> Case:
    files = write_series(d)
    call = HttpCall(files=parts(files, name=lambda p: f"../../../../../../tmp/{EVIL_NAME}-{p.name}"))
    return _http_only(
        "traversal_filenames",
        f"a valid series uploaded as '../../../../../../tmp/{EVIL_NAME}-*'",
        call,
        HttpExpect(202, None, "succeeded"),
        "file names are not sent over DICOM; the DICOM counterpart is series_uid_path_traversal",
    )


# ---------------------------------------------------------------------------------------------- archives
def zip_path_traversal(d: Path) -> Case:
    data = _series_zip(d, name=lambda n, p: f"../../{p.name}" if n == 3 else f"ok/{p.name}")
    return _http_only(
        "zip_path_traversal",
        "a zip with an entry '../../CT....dcm'",
        _zip_part(data),
        _bad("UNSAFE_ARCHIVE"),
        NA_ARCHIVE,
    )


def zip_absolute_path(d: Path) -> Case:
    data = _series_zip(d, name=lambda n, p: f"/etc/cron.d/{p.name}")
    return _http_only(
        "zip_absolute_path",
        "a zip whose entries are '/etc/cron.d/...'",
        _zip_part(data),
        _bad("UNSAFE_ARCHIVE"),
        NA_ARCHIVE,
    )


def zip_symlink(d: Path) -> Case:
    data = zip_bytes({"a.dcm": b"x"}, symlink="link.dcm")
    return _http_only(
        "zip_symlink",
        "a zip holding a symbolic link to /etc/passwd",
        _zip_part(data),
        _bad("UNSAFE_ARCHIVE"),
        NA_ARCHIVE,
    )


def zip_bomb_ratio(d: Path) -> Case:
    data = zip_bytes({"zeros.dcm": b"\0" * (2 * 2**20)})
    return _http_only(
        "zip_bomb_ratio",
        "a zip bomb: 2 MiB of zeros in ~2 kB (ratio ~1000)",
        _zip_part(data),
        _bad("UNSAFE_ARCHIVE"),
        NA_ARCHIVE,
    )


def zip_bomb_size(d: Path) -> Case:
    data = zip_bytes({f"z{n}.dcm": b"\0" * (8 * 2**20) for n in range(8)})
    return _http_only(
        "zip_bomb_size",
        "a zip expanding to 64 MiB (over the byte limit)",
        _zip_part(data),
        HttpExpect(413, "UPLOAD_TOO_LARGE"),
        NA_ARCHIVE,
    )


def zip_size_lie(d: Path) -> Case:
    payload = np.random.default_rng(2).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    raw = bytearray(zip_bytes({"a.dcm": payload}, method=zipfile.ZIP_STORED))
    fake = (1000).to_bytes(4, "little")  # declared uncompressed size 1000 (local header and central directory)
    raw[22:26] = fake
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = fake
    return _http_only(
        "zip_size_lie",
        "a zip entry larger than its declared size",
        _zip_part(bytes(raw)),
        _bad("BAD_ARCHIVE"),
        NA_ARCHIVE,
    )


def zip_nested(d: Path) -> Case:
    inner = _series_zip(d)
    return _http_only(
        "zip_nested",
        "a zip inside a zip (inner archives are not expanded)",
        _zip_part(zip_bytes({"inner.zip": inner})),
        HttpExpect(422, "EMPTY_INPUT"),
        NA_ARCHIVE,
    )


def zip_corrupt(d: Path) -> Case:
    return _http_only(
        "zip_corrupt",
        "zip magic followed by garbage",
        _zip_part(b"PK\x03\x04" + b"\x00garbage" * 50),
        _bad("BAD_ARCHIVE"),
        NA_ARCHIVE,
    )


def zip_encrypted(d: Path) -> Case:
    raw = bytearray(_series_zip(d))
    pos = 0
    while (pos := raw.find(b"PK\x01\x02", pos)) >= 0:  # set the 'encrypted' flag bit in every central entry
        raw[pos + 8] |= 0x01
        pos += 4
    return _http_only(
        "zip_encrypted",
        "a zip whose entries are flagged encrypted",
        _zip_part(bytes(raw)),
        _bad("BAD_ARCHIVE"),
        NA_ARCHIVE,
    )


def zip_too_many_entries(d: Path) -> Case:
    data = zip_bytes({f"f{n}.dcm": b"x" for n in range(MAX_UPLOAD_FILES + 1)})
    return _http_only(
        "zip_too_many_entries",
        f"a zip with {MAX_UPLOAD_FILES + 1} entries (limit {MAX_UPLOAD_FILES})",
        _zip_part(data),
        HttpExpect(413, "TOO_MANY_FILES"),
        NA_ARCHIVE,
    )


# ---------------------------------------------------------------------------------------------- size and count
def too_many_parts(d: Path) -> Case:
    call = HttpCall(files=[("files", (f"{n}.dcm", b"x", "application/dicom")) for n in range(MAX_UPLOAD_FILES + 1)])
    return _http_only(
        "too_many_parts",
        f"{MAX_UPLOAD_FILES + 1} file parts (limit {MAX_UPLOAD_FILES})",
        call,
        HttpExpect(413, "TOO_MANY_FILES"),
        NA_SIZE,
    )


def oversized_declared(d: Path) -> Case:
    call = HttpCall(files=[("files", ("big.dcm", b"\1" * (MAX_UPLOAD_BYTES + 2 * 2**20), "application/dicom"))])
    return _http_only(
        "oversized_declared",
        "a 6 MiB upload with Content-Length (limit 4 MiB)",
        call,
        HttpExpect(413, "UPLOAD_TOO_LARGE"),
        NA_SIZE,
    )


def oversized_streamed(d: Path) -> Case:
    boundary = "corpusBOUNDARY"

    def chunks() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="s.dcm"\r\n\r\n'.encode()
        for _ in range(24):
            yield b"\2" * 2**18  # 6 MiB
        yield f"\r\n--{boundary}--\r\n".encode()

    call = HttpCall(stream=chunks, content_type=f"multipart/form-data; boundary={boundary}")
    return _http_only(
        "oversized_streamed",
        "a 6 MiB chunked upload without Content-Length",
        call,
        HttpExpect(413, "UPLOAD_TOO_LARGE"),
        NA_SIZE,
    )


# ---------------------------------------------------------------------------------------------- authentication
def missing_auth(d: Path) -> Case:
    files = write_series(d)
    return Case(
        "missing_auth",
        "no Authorization header / an unknown calling AE title",
        HttpCall(files=parts(files), auth=None),
        HttpExpect(401, "UNAUTHORIZED"),
        DicomSend(files, calling_ae="INTRUDER"),
        DicomExpect(association="rejected"),
    )


def wrong_key(d: Path) -> Case:
    files = write_series(d)
    return Case(
        "wrong_key",
        "an unknown API key / a wrong called AE title",
        HttpCall(files=parts(files), auth="Bearer not-a-key-0000"),
        HttpExpect(401, "UNAUTHORIZED"),
        DicomSend(files, called_ae="SOMEONE_ELSE"),
        DicomExpect(association="rejected"),
    )


def basic_auth(d: Path) -> Case:
    return _http_only(
        "basic_auth",
        "Authorization: Basic (user:password) instead of Bearer",
        HttpCall(files=parts(write_series(d)), auth="Basic YWxpY2U6c2VjcmV0"),
        HttpExpect(401, "UNAUTHORIZED"),
        "DICOM has no credentials header; see missing_auth",
    )


# ---------------------------------------------------------------------------------------------- request framing
def json_body(d: Path) -> Case:
    return _http_only(
        "json_body",
        "Content-Type application/json",
        HttpCall(content=b'{"files": []}', content_type="application/json"),
        _bad(),
        NA_REQUEST,
    )


def raw_dicom_body(d: Path) -> Case:
    f = write_series(d)
    return _http_only(
        "raw_dicom_body",
        "one DICOM file as the body, Content-Type application/dicom",
        HttpCall(content=f[0].read_bytes(), content_type="application/dicom"),
        _bad(),
        NA_REQUEST,
    )


def urlencoded_form(d: Path) -> Case:
    return _http_only(
        "urlencoded_form",
        "an application/x-www-form-urlencoded form, no files",
        HttpCall(data={"model": "oracle"}),
        _bad(),
        NA_REQUEST,
    )


def multipart_no_boundary(d: Path) -> Case:
    return _http_only(
        "multipart_no_boundary",
        "Content-Type multipart/form-data without a boundary",
        HttpCall(content=b"--x\r\n\r\n--x--\r\n", content_type="multipart/form-data"),
        _bad(),
        NA_REQUEST,
    )


def truncated_multipart(d: Path) -> Case:
    boundary = "xyzBOUNDARY"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.dcm"\r\n\r\n'
        "partial data without the closing boundary"
    ).encode()
    return _http_only(
        "truncated_multipart",
        "a multipart body without its closing boundary",
        HttpCall(content=body, content_type=f"multipart/form-data; boundary={boundary}"),
        _bad(),
        NA_REQUEST,
    )


def unknown_field(d: Path) -> Case:
    return _http_only(
        "unknown_field",
        "an unknown form field 'colour'",
        HttpCall(files=parts(write_series(d))[:1], data={"colour": "red"}),
        _bad(),
        NA_REQUEST,
    )


def model_path_traversal(d: Path) -> Case:
    return _http_only(
        "model_path_traversal",
        "model '../../etc'",
        HttpCall(files=parts(write_series(d))[:1], data={"model": "../../etc"}),
        _bad(),
        "the listener's model is its own setting, never chosen by the sender",
    )


def unknown_model(d: Path) -> Case:
    return _http_only(
        "unknown_model",
        "model 'nope:9' (not in the store)",
        HttpCall(files=parts(write_series(d)), data={"model": "nope:9"}),
        HttpExpect(422, "MODEL_NOT_FOUND"),
        "the listener's model is its own setting",
    )


def non_utf8_field(d: Path) -> Case:
    boundary = "utf8BOUNDARY"
    body = (
        (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n').encode()
        + b"\xff\xfe\xfd"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return _http_only(
        "non_utf8_field",
        "a text field that is not UTF-8",
        HttpCall(content=body, content_type=f"multipart/form-data; boundary={boundary}"),
        _bad(),
        NA_REQUEST,
    )


def ct_as_reference(d: Path) -> Case:
    files = write_series(d)
    call = HttpCall(files=parts(files) + [("reference", ("ref.dcm", files[0].read_bytes(), "application/dicom"))])
    return _http_only(
        "ct_as_reference",
        "a CT image as the reference RTSTRUCT",
        call,
        HttpExpect(422, "BAD_REFERENCE"),
        "the listener takes no reference RTSTRUCT",
    )


REQUEST_CASES: list[Callable[[Path], Case]] = [
    text_file,
    random_bytes,
    empty_file,
    series_with_junk,
    traversal_filenames,
    zip_path_traversal,
    zip_absolute_path,
    zip_symlink,
    zip_bomb_ratio,
    zip_bomb_size,
    zip_size_lie,
    zip_nested,
    zip_corrupt,
    zip_encrypted,
    zip_too_many_entries,
    too_many_parts,
    oversized_declared,
    oversized_streamed,
    missing_auth,
    wrong_key,
    basic_auth,
    json_body,
    raw_dicom_body,
    urlencoded_form,
    multipart_no_boundary,
    truncated_multipart,
    unknown_field,
    model_path_traversal,
    unknown_model,
    non_utf8_field,
    ct_as_reference,
]
