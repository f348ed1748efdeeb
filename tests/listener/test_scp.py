"""The SCP's association policy and C-STORE statuses, against DCMTK echoscu/storescu and a pynetdicom SCU."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from tests.listener.conftest import (
    LISTENER_AE,
    SCANNER_AE,
    audit,
    echoscu,
    self_signed_cert,
    storescu,
)
from tests.support.net import wait_for


def associate(port: int, calling_ae: str = SCANNER_AE):
    scu = AE(ae_title=calling_ae)
    scu.add_requested_context(CTImageStorage)
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", port, ae_title=LISTENER_AE)
    assert assoc.is_established
    return assoc


def spooled_files(listener) -> list[Path]:
    return sorted(listener.spool.series_root.rglob("*.dcm"))


def test_echoscu_known_ae_accepted_unknown_and_wrong_called_ae_rejected(start_listener):
    listener = start_listener()
    ok = echoscu(listener.port)
    assert ok.returncode == 0, ok.stderr
    intruder = echoscu(listener.port, "INTRUDER")
    assert intruder.returncode != 0 and "Calling AE Title Not Recognized" in intruder.stdout + intruder.stderr
    wrong_called = echoscu(listener.port, SCANNER_AE, "SOMEONE_ELSE")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr

    records = wait_for(
        lambda: len(audit(listener, "association")) >= 3 and audit(listener, "association"),
        10,
        "three association records",
    )
    outcomes = {(r["calling_ae"], r["called_ae"], r["outcome"]) for r in records}
    assert (SCANNER_AE, LISTENER_AE, "released") in outcomes
    assert ("INTRUDER", LISTENER_AE, "rejected") in outcomes
    assert (SCANNER_AE, "SOMEONE_ELSE", "rejected") in outcomes
    rejected = [r for r in records if r["outcome"] == "rejected"]
    assert {r["reason"] for r in rejected} == {"calling AE title not recognised", "called AE title not recognised"}


def test_allow_unknown_ae_accepts_any_calling_ae(start_listener):
    listener = start_listener(peers=[], allow_unknown_ae=True)
    assert echoscu(listener.port, "ANYONE").returncode == 0


def test_storescu_from_unknown_ae_stores_nothing(start_listener, make_series):
    listener = start_listener()
    series = make_series()
    sent = storescu(listener.port, series.files[:3], calling_ae="INTRUDER")
    assert sent.returncode != 0
    assert spooled_files(listener) == []


def test_free_disk_below_watermark_refuses_with_out_of_resources(start_listener, make_series):
    listener = start_listener(min_free_disk_mb=1e12)  # a petabyte: always below the watermark
    series = make_series()
    assoc = associate(listener.port)
    status = assoc.send_c_store(pydicom.dcmread(series.files[0]))
    assoc.release()
    assert status.Status == 0xA700
    sent = storescu(listener.port, series.files[:2])  # DCMTK reports the failed stores
    assert sent.returncode != 0
    assert spooled_files(listener) == []
    records = wait_for(
        lambda: len(audit(listener, "association")) >= 2 and audit(listener, "association"),
        10,
        "two association records",
    )
    assert [r["statuses"] for r in records] == [{"0xA700": 1}, {"0xA700": 1}]  # storescu stops at the first
    assert all(r["n_stored"] == 0 for r in records)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_invalid_objects_get_failure_statuses_and_the_listener_keeps_working(
    start_listener, make_series, tmp_path, monkeypatch
):
    listener = start_listener()
    series = make_series()
    good = pydicom.dcmread(series.files[0])

    def variant(change) -> pydicom.Dataset:
        ds = copy.deepcopy(good)
        change(ds)
        return ds

    assoc = associate(listener.port)
    no_series = variant(lambda ds: delattr(ds, "SeriesInstanceUID"))
    not_ct = variant(lambda ds: setattr(ds, "Modality", "MR"))
    no_pixels = variant(lambda ds: delattr(ds, "PixelData"))
    bad_uid = variant(lambda ds: setattr(ds, "SeriesInstanceUID", "1.2.3.abc"))
    for ds in (no_series, not_ct, no_pixels, bad_uid):
        assert assoc.send_c_store(ds).Status == 0xA900
    assoc.release()

    # undecodable bytes: a file whose data set is a truncated sequence, sent as-is (no encoding by the SCU)
    raw = series.files[1].read_bytes()
    _, offset = split_dataset(series.files[1])
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(raw[:offset] + b"\x08\x00\x16\x00SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x10\x00\x00\x00abc")
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    assoc = associate(listener.port)
    assert assoc.send_c_store(garbage).Status == 0xC210
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)
    # the same association still works: a valid instance is stored, C-ECHO answers
    assert assoc.send_c_store(good).Status == 0x0000
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()

    assert [p.name for p in spooled_files(listener)] == [f"{good.SOPInstanceUID}.dcm"]
    records = wait_for(
        lambda: len(audit(listener, "association")) >= 2 and audit(listener, "association"),
        10,
        "two association records",
    )
    assert records[0]["statuses"] == {"0xA900": 4} and records[0]["n_refused"] == 4
    assert records[1]["statuses"] == {"0x0000": 1, "0xC210": 1}


def test_short_or_truncated_pixel_data_is_refused_and_not_spooled(start_listener, make_series, tmp_path, monkeypatch):
    listener = start_listener()
    series = make_series()
    good = pydicom.dcmread(series.files[0])
    short = copy.deepcopy(good)
    short.PixelData = good.PixelData[:-256]  # a complete element, 128 pixels short of Rows x Columns
    claims_more = copy.deepcopy(good)
    claims_more.NumberOfFrames = 2  # the attributes call for twice the pixels that are sent
    truncated = tmp_path / "truncated.dcm"  # the file cut inside (7FE0,0010) Pixel Data, sent as it is
    truncated.write_bytes(series.files[1].read_bytes()[:-100])

    assoc = associate(listener.port)
    assert assoc.send_c_store(short).Status == 0xA900
    assert assoc.send_c_store(claims_more).Status == 0xA900
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    assert assoc.send_c_store(truncated).Status == 0xA900
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)
    assert assoc.send_c_store(good).Status == 0x0000  # the association still works
    assoc.release()

    assert [p.name for p in spooled_files(listener)] == [f"{good.SOPInstanceUID}.dcm"]
    assert not list(listener.spool.root.rglob("*.partial"))
    records = wait_for(lambda: audit(listener, "association"), 10, "the association record")
    assert records[0]["statuses"] == {"0x0000": 1, "0xA900": 3}


def test_pixel_data_length_rule_is_the_loaders(make_series) -> None:
    """The handler's rule: native Pixel Data at least as long as the loader's expected length; encapsulated
    Pixel Data (no fixed length) is left to the pipeline's decoder."""
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    from service.listener.scp import pixel_data_too_short

    ds = pydicom.dcmread(make_series(n_slices=1).files[0])
    assert not pixel_data_too_short(ds, ExplicitVRLittleEndian)
    ds.PixelData = ds.PixelData[:-2]
    assert pixel_data_too_short(ds, ExplicitVRLittleEndian)
    assert not pixel_data_too_short(ds, RLELossless)
    del ds.Rows  # the length cannot be known: the pipeline reports the missing attribute
    assert not pixel_data_too_short(ds, ExplicitVRLittleEndian)


def test_tls_with_a_self_signed_certificate_and_client_certificates(start_listener, tmp_path):
    cert, key = self_signed_cert(tmp_path, "localhost")
    listener = start_listener(tls_cert_file=cert, tls_key_file=key)

    over_tls = echoscu(listener.port, SCANNER_AE, LISTENER_AE, "+tla", "+cf", str(cert))
    assert over_tls.returncode == 0, over_tls.stdout + over_tls.stderr
    plain = echoscu(listener.port)
    assert plain.returncode != 0
    records = wait_for(
        lambda: [r for r in audit(listener, "association") if r["outcome"] == "released"],
        10,
        "the TLS association record",
    )
    assert records[0]["tls"] is True

    # with a CA file, client certificates are required: the self-signed certificate is its own CA here
    strict = start_listener(tls_cert_file=cert, tls_key_file=key, tls_ca_file=cert)
    with_cert = echoscu(strict.port, SCANNER_AE, LISTENER_AE, "+tls", str(key), str(cert), "+cf", str(cert))
    assert with_cert.returncode == 0, with_cert.stdout + with_cert.stderr
    without_cert = echoscu(strict.port, SCANNER_AE, LISTENER_AE, "+tla", "+cf", str(cert))
    assert without_cert.returncode != 0


@pytest.mark.parametrize(
    "bad",
    [
        {"tls_cert_file": "/nonexistent/cert.pem", "tls_key_file": "/nonexistent/key.pem"},
        {"tls_cert_file": __file__},
    ],
)
def test_tls_settings_refused_when_incomplete(bad, tmp_path):
    from pydantic import ValidationError

    from service.listener.settings import load_settings

    with pytest.raises(ValidationError):
        load_settings(spool_dir=tmp_path, peers=[{"ae_title": SCANNER_AE, "return_mode": "none"}], **bad)


def test_aborted_association_leaves_a_partial_series_that_is_cleaned_up(start_listener, make_series):
    listener = start_listener(partial_timeout_s=1.0, quiet_time_s=0.5)  # quiet time must not dispatch it
    series = make_series()
    assoc = associate(listener.port)
    for f in series.files[:5]:
        assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0x0000
    assoc.abort()
    (record,) = wait_for(lambda: audit(listener, "association"), 10, "the association record")
    assert record["outcome"] == "aborted" and record["n_stored"] == 5
    (expired,) = wait_for(lambda: audit(listener, "series_expired"), 20, "the partial series clean-up")
    assert (expired["series_uid"], expired["reason"], expired["n_instances"]) == (
        series.series_uid,
        "partial_timeout",
        5,
    )
    assert not listener.spool.series_dir(series.series_uid).exists()
    assert audit(listener, "series_ready") == [] and audit(listener, "job_submitted") == []
