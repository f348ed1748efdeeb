"""The return path over TLS, against a real DCMTK ``storescp +tls`` peer: certificates verified both ways."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydantic import ValidationError
from pydicom.uid import RTStructureSetStorage

from service.listener.delivery import DeliveryError, Destination, send_rtstruct
from service.listener.settings import load_settings
from tests.listener.conftest import LISTENER_AE, SCANNER_AE, audit, run_tool, self_signed_cert
from tests.support.net import wait_for


def _tls_peer(storescp_factory, server: tuple[Path, Path], client_cert: Path | None):
    """storescp over TLS; with ``client_cert`` it requires and verifies our client certificate."""
    cert, key = server
    auth = ("-rc", "+cf", str(client_cert)) if client_cert else ("-ic",)
    return storescp_factory("TPS", extra_args=("+tls", str(key), str(cert), *auth))


def test_rtstruct_comes_back_over_mutual_tls(tmp_path, start_listener, storescp_factory, make_series):
    server = self_signed_cert(tmp_path, "tps")
    ours = self_signed_cert(tmp_path, "parotid")
    tps = _tls_peer(storescp_factory, server, client_cert=ours[0])
    peer = {
        "ae_title": SCANNER_AE,
        "return_mode": "fixed",
        "return_ae_title": "TPS",
        "return_host": "127.0.0.1",
        "return_port": tps.port,
        "return_tls": True,
    }
    listener = start_listener(
        peers=[peer], tls_cert_file=ours[0], tls_key_file=ours[1], tls_ca_file=None, return_tls_ca_file=server[0]
    )
    series = make_series()
    # incoming TLS is on too (our certificate is the server certificate): the scanner side trusts it
    sent = run_tool(
        "storescu",
        "+tla",
        "+cf",
        str(ours[0]),
        "-aet",
        SCANNER_AE,
        "-aec",
        LISTENER_AE,
        "127.0.0.1",
        str(listener.port),
        *map(str, series.files),
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    (received,) = wait_for(tps.received, 120, "the RTSTRUCT at storescp over TLS")
    assert pydicom.dcmread(received).SOPClassUID == RTStructureSetStorage
    (delivered,) = wait_for(lambda: audit(listener, "delivered"), 10, "the delivery record")
    assert delivered["destination"] == f"TPS@127.0.0.1:{tps.port} (TLS)"


def test_untrusted_destination_certificate_is_refused(tmp_path, storescp_factory, make_series):
    server = self_signed_cert(tmp_path, "tps")
    impostor_ca, _ = self_signed_cert(tmp_path, "other")
    tps = _tls_peer(storescp_factory, server, client_cert=None)
    file = make_series().files[0]
    dest = Destination("TPS", "127.0.0.1", tps.port, tls=True)
    peers = [{"ae_title": SCANNER_AE, "return_mode": "none", "return_tls": True}]
    wrong = load_settings(spool_dir=tmp_path / "s1", peers=peers, return_tls_ca_file=impostor_ca)
    with pytest.raises(DeliveryError, match="TLS: self-signed certificate"):
        send_rtstruct(file, dest, LISTENER_AE, 10.0, wrong.return_tls_context())
    assert tps.received() == []
    right = load_settings(spool_dir=tmp_path / "s2", peers=peers, return_tls_ca_file=server[0])
    assert send_rtstruct(file, dest, LISTENER_AE, 10.0, right.return_tls_context())
    assert len(tps.received()) == 1


def test_tls_destination_never_falls_back_to_plain_tcp(tmp_path, storescp_factory, make_series):
    plain = storescp_factory("TPS")
    file = make_series().files[0]
    server = self_signed_cert(tmp_path, "tps")
    peers = [{"ae_title": SCANNER_AE, "return_mode": "none", "return_tls": True}]
    ctx = load_settings(spool_dir=tmp_path, peers=peers, return_tls_ca_file=server[0]).return_tls_context()
    with pytest.raises(DeliveryError):
        send_rtstruct(file, Destination("TPS", "127.0.0.1", plain.port, tls=True), LISTENER_AE, 5.0, ctx)
    with pytest.raises(DeliveryError, match="no TLS client context"):
        send_rtstruct(file, Destination("TPS", "127.0.0.1", plain.port, tls=True), LISTENER_AE, 5.0, None)
    assert plain.received() == []


def test_return_tls_settings_are_checked_at_start_up(tmp_path):
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    tls_peer = [{"ae_title": SCANNER_AE, "return_mode": "none", "return_tls": True}]
    with pytest.raises(ValidationError, match="return path TLS"):
        load_settings(spool_dir=tmp_path, peers=tls_peer, return_tls_ca_file=not_pem)
    plain_peer = [{"ae_title": SCANNER_AE, "return_mode": "none"}]
    with pytest.raises(ValidationError, match="no peer has return_tls"):
        load_settings(spool_dir=tmp_path, peers=plain_peer, return_tls_ca_file=not_pem)
    assert load_settings(spool_dir=tmp_path, peers=plain_peer).return_tls_context() is None
