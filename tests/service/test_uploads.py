"""Bad uploads: each refused at once with its code and a 4xx, nothing left in the job store, never a 500."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.service.conftest import KEY_ALICE, auth, make_settings, write_phantom_series
from tests.support.zips import zip_bytes


@pytest.fixture
def client(tmp_path: Path, model_store: Path):
    settings = make_settings(
        tmp_path / "jobs", model_store, max_upload_bytes=8 * 2**20, max_upload_files=60, zip_max_ratio=50
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _post(client, files=None, data=None, **kw):
    return client.post("/v1/jobs", files=files, data=data, headers=auth(KEY_ALICE), **kw)


def _refused(r, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["schema_version"] == "1" and body["error"]["code"] == code, body
    return body["error"]["message"]


def _store_empty(client) -> None:
    store = client.app.state.jobs.store
    assert list(store.jobs_dir.iterdir()) == []
    assert list(store.staging_dir.iterdir()) == []


def test_series_refusals_keep_the_pipeline_code(client, ct_series, tmp_path):
    files = ct_series.files
    msg = _refused(_post(client, files=[("files", ("notes.txt", b"hello", "text/plain"))]), 422, "EMPTY_INPUT")
    assert "DICOM" in msg
    msg = _refused(_post(client, files=[("files", (p.name, p.read_bytes())) for p in files[:5]]), 422, "TOO_FEW_SLICES")
    assert "16" in msg and str(client.app.state.settings.job_dir) not in msg
    twice = [("files", (f"copy{n}_{p.name}", p.read_bytes())) for n in (1, 2) for p in files[:20]]
    msg = _refused(_post(client, files=twice), 422, "DUPLICATE_POSITION")
    assert "'copy1_" in msg and "'copy2_" in msg  # names as uploaded, not server paths
    other = write_phantom_series(tmp_path / "other")
    both = ct_series.parts()[:20] + other.parts()[:20]
    _refused(_post(client, files=both), 422, "MULTIPLE_SERIES")
    corrupt = files[0].read_bytes()[:400]
    msg = _refused(
        _post(client, files=[("files", ("cut.dcm", corrupt))] + ct_series.parts()[1:20]), 422, "CORRUPT_FILE"
    )
    assert "'cut.dcm'" in msg
    _refused(_post(client, files=ct_series.parts(), data={"model": "nope:9"}), 422, "MODEL_NOT_FOUND")
    ref = [("reference", ("ref.dcm", files[0].read_bytes()))]
    msg = _refused(_post(client, files=ct_series.parts() + ref), 422, "BAD_REFERENCE")
    assert "'ref.dcm'" in msg and "(0008,0016)" in msg
    _store_empty(client)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_modality_and_invalid_uid_refusals(client, tmp_path):
    from service.api.errors import status_for
    from service.errors import ErrorCode
    from tests import dicom_variants as dv

    assert status_for(ErrorCode.INVALID_ATTRIBUTE) == 422
    mr = write_phantom_series(tmp_path / "mr")
    dv.set_attrs(mr.files[3], Modality="MR")
    msg = _refused(_post(client, files=mr.parts()), 422, "NOT_CT")
    assert f"'{mr.files[3].name}'" in msg and "(0008,0060) Modality" in msg
    bad = write_phantom_series(tmp_path / "uid")
    dv.set_attrs(bad.files, SeriesInstanceUID="../../../../tmp/not-a-uid")
    msg = _refused(_post(client, files=bad.parts()), 422, "INVALID_ATTRIBUTE")
    assert "(0020,000E) SeriesInstanceUID" in msg and "not-a-uid" not in msg
    _store_empty(client)


def test_accepted_uploads_leave_no_upload_folder(client, ct_series, tmp_path):
    """Parts arrive in the staging folder's .upload/; once moved into input/ (or extracted) it is removed."""
    from tests.service.conftest import wait_for_job

    store = client.app.state.jobs.store
    zipped = write_phantom_series(tmp_path / "zipped")
    for files in (ct_series.parts(), [("files", ("series.zip", zipped.zip_bytes(), "application/zip"))]):
        r = _post(client, files=files)
        assert r.status_code == 202, r.text
        folder = store.job_path(r.json()["id"])
        assert folder.is_dir() and not (folder / ".upload").exists()
        assert wait_for_job(client, r.json()["id"], KEY_ALICE)["state"] == "succeeded"
    assert not list(store.root.rglob(".upload"))


def test_malformed_requests(client, ct_series):
    one = ct_series.parts()[:1]
    _refused(client.post("/v1/jobs", json={"files": []}, headers=auth(KEY_ALICE)), 400, "BAD_UPLOAD")
    _refused(_post(client, data={"model": "oracle"}), 400, "BAD_UPLOAD")  # urlencoded, no files
    _refused(_post(client, files=one, data={"colour": "red"}), 400, "BAD_UPLOAD")
    _refused(_post(client, files=one, data={"model": "../../etc"}), 400, "BAD_UPLOAD")
    _refused(_post(client, files=one, data={"series_uid": "1.2.x"}), 400, "BAD_UPLOAD")
    two_refs = one + [("reference", ("a", b"1")), ("reference", ("b", b"2"))]
    _refused(_post(client, files=two_refs), 400, "BAD_UPLOAD")
    boundary = "xyzBOUNDARY"
    truncated = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.dcm"\r\n\r\n'
        "partial data without the closing boundary"
    ).encode()
    r = client.post(
        "/v1/jobs",
        content=truncated,
        headers={**auth(KEY_ALICE), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    _refused(r, 400, "BAD_UPLOAD")
    garbage = f"--{boundary}\r\nno headers at all\r\n\r\n\x00\x01--{boundary}--\r\n".encode()
    r = client.post(
        "/v1/jobs",
        content=garbage,
        headers={**auth(KEY_ALICE), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 400, r.text
    _store_empty(client)


def test_unsafe_and_broken_archives(client, ct_series):
    dcm = ct_series.files[0].read_bytes()

    def post_zip(data: bytes):
        return _post(client, files=[("files", ("upload.zip", data, "application/zip"))])

    msg = _refused(post_zip(zip_bytes({"ok/a.dcm": dcm, "../../evil.dcm": dcm})), 400, "UNSAFE_ARCHIVE")
    assert "'..'" in msg and "upload.zip" in msg
    _refused(post_zip(zip_bytes({"/etc/cron.d/x": dcm})), 400, "UNSAFE_ARCHIVE")
    _refused(post_zip(zip_bytes({"C:\\windows\\x.dcm": dcm})), 400, "UNSAFE_ARCHIVE")
    _refused(post_zip(zip_bytes({"a.dcm": dcm}, symlink="link.dcm")), 400, "UNSAFE_ARCHIVE")
    bomb = zip_bytes({"zeros.dcm": b"\0" * (4 * 2**20)})  # 4 MiB of zeros -> a few KiB: ratio ~1000 > 50
    msg = _refused(post_zip(bomb), 400, "UNSAFE_ARCHIVE")
    assert "zip bomb" in msg
    big = zip_bytes({f"r{n}.bin": bytes(range(256)) * 4096 * 3 for n in range(12)})  # 12 x 3 MiB > 8 MiB limit
    _refused(post_zip(big), 413, "UPLOAD_TOO_LARGE")
    _refused(post_zip(b"PK\x03\x04" + b"\x00garbage" * 50), 400, "BAD_ARCHIVE")
    many = zip_bytes({f"f{n}.dcm": b"x" for n in range(61)})
    _refused(post_zip(many), 413, "TOO_MANY_FILES")
    _store_empty(client)


def test_size_and_count_limits(client, ct_series):
    too_many = [("files", (f"{n}.dcm", b"x")) for n in range(61)]
    _refused(_post(client, files=too_many), 413, "TOO_MANY_FILES")
    big = [("files", ("big.dcm", b"\1" * (9 * 2**20)))]
    _refused(_post(client, files=big), 413, "UPLOAD_TOO_LARGE")  # Content-Length checked before reading

    boundary = "streamBOUNDARY"

    def chunks():  # no Content-Length: the limit is enforced while the bytes arrive
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="s.dcm"\r\n\r\n'.encode()
        for _ in range(40):
            yield b"\2" * 2**18  # 10 MiB in total
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/v1/jobs",
        content=chunks(),
        headers={**auth(KEY_ALICE), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    _refused(r, 413, "UPLOAD_TOO_LARGE")
    _store_empty(client)


def test_reference_rtstruct_is_used_and_a_mismatched_one_fails_the_job(client, ct_series, tmp_path):
    from tests.service.conftest import wait_for_job

    first = _post(client, files=ct_series.parts())
    done = wait_for_job(client, first.json()["id"], KEY_ALICE)
    rtstruct = client.get(done["links"]["rtstruct"], headers=auth(KEY_ALICE)).content
    ref = [("reference", ("clinical_rs.dcm", rtstruct, "application/dicom"))]
    with_ref = _post(client, files=ct_series.parts() + ref)
    assert with_ref.status_code == 202 and with_ref.json()["id"] != done["id"]  # the reference changes the key
    assert with_ref.json()["has_reference"] is True
    done_ref = wait_for_job(client, with_ref.json()["id"], KEY_ALICE)
    assert done_ref["state"] == "succeeded", done_ref
    qa = client.get(done_ref["links"]["qa"], headers=auth(KEY_ALICE)).json()
    assert qa["glands"]["Parotid_L"]["reference"]["dice"] == pytest.approx(1.0)

    other = write_phantom_series(tmp_path / "other")  # another Frame of Reference: the reference cannot apply
    mismatch = _post(client, files=other.parts() + ref)
    assert mismatch.status_code == 202
    failed = wait_for_job(client, mismatch.json()["id"], KEY_ALICE)
    assert failed["state"] == "failed" and failed["error"]["code"] == "BAD_REFERENCE", failed
    # the stored name, not the uploaded one: upload names (often patient names) are not kept with a job (issue 16)
    assert "reference.dcm" in failed["error"]["message"] and "clinical_rs" not in failed["error"]["message"]
    assert str(client.app.state.settings.job_dir) not in failed["error"]["message"]
    r = client.get(failed["links"]["rtstruct"], headers=auth(KEY_ALICE))
    assert r.status_code == 409 and r.json()["error"]["code"] == "JOB_NOT_SUCCEEDED"
    # a failed job does not block a new submission of the same series
    again = _post(client, files=other.parts() + ref)
    assert again.status_code == 202 and again.json()["id"] != failed["id"]
    assert pydicom.dcmread(io.BytesIO(rtstruct)).Modality == "RTSTRUCT"
