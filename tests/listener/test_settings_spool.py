"""Settings validation and precedence, ``--peer`` parsing, the spool's atomic writes and UID checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.listener.app_cli import parse_peer
from service.listener.settings import load_settings
from service.listener.spool import Spool, is_valid_uid

PEERS = [{"ae_title": "SCANNER", "return_mode": "none"}]


def test_defaults_and_precedence_file_env_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = tmp_path / "listener.toml"
    cfg.write_text(
        'ae_title = "FROM_FILE"\nport = 4242\nquiet_time_s = 12\n'
        '[[peers]]\nae_title = "CT1"\nreturn_mode = "fixed"\nreturn_ae_title = "TPS"\n'
        'return_host = "10.1.2.3"\nreturn_port = 104\n'
    )
    monkeypatch.setenv("PAROTID_LISTENER_PORT", "5000")
    s = load_settings(cfg, quiet_time_s=2.5)
    assert (s.ae_title, s.port, s.quiet_time_s) == ("FROM_FILE", 5000, 2.5)  # file < env < code
    assert s.peer("CT1 ").return_host == "10.1.2.3" and s.peer("CT2") is None
    monkeypatch.setenv("PAROTID_LISTENER_CONFIG_FILE", str(cfg))
    assert load_settings().ae_title == "FROM_FILE"
    monkeypatch.delenv("PAROTID_LISTENER_CONFIG_FILE")
    monkeypatch.delenv("PAROTID_LISTENER_PORT")
    monkeypatch.setenv("PAROTID_LISTENER_PEERS", '[{"ae_title": "CT9", "return_mode": "sender", "return_port": 11113}]')
    s = load_settings()
    assert (s.ae_title, s.port, s.quiet_time_s, s.allowed_ae_titles) == ("PAROTID_SEG", 11112, 30.0, ["CT9"])


@pytest.mark.parametrize(
    "bad",
    [
        {"ae_title": "WAY_TOO_LONG_AE_TITLE"},
        {"ae_title": "BACK\\SLASH"},
        {"port": 70000},
        {"quiet_time_s": 0},
        {"peers": []},  # nobody could connect
        {"peers": PEERS + PEERS},
        {"peers": [{"ae_title": "CT1", "return_mode": "fixed", "return_port": 104}]},  # no host
        {"peers": [{"ae_title": "CT1", "return_mode": "sender"}]},  # no port
        {"delivery_backoff_s": 10, "delivery_backoff_max_s": 1},
    ],
)
def test_unsafe_or_inconsistent_values_are_refused(bad: dict, tmp_path: Path):
    values = {"spool_dir": tmp_path, "peers": PEERS, **bad}
    with pytest.raises(ValidationError):
        load_settings(**values)


def test_missing_config_file_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_parse_peer():
    assert parse_peer("CT1") == {"ae_title": "CT1", "return_mode": "none"}
    assert parse_peer("CT1=sender:104") == {
        "ae_title": "CT1",
        "return_mode": "sender",
        "return_port": 104,
        "return_ae_title": None,
    }
    assert parse_peer("CT1=fixed:TPS@10.0.0.9:11112") == {
        "ae_title": "CT1",
        "return_mode": "fixed",
        "return_ae_title": "TPS",
        "return_host": "10.0.0.9",
        "return_port": 11112,
    }
    with pytest.raises(ValueError, match="expected"):
        parse_peer("CT1=sender:abc")


def test_spool_writes_atomically_and_refuses_non_uids(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    path = spool.store_instance("1.2.3", "1.2.3.4", b"DICM-bytes")
    assert path.read_bytes() == b"DICM-bytes" and path.name == "1.2.3.4.dcm"
    spool.store_instance("1.2.3", "1.2.3.4", b"resent")  # a resend replaces the earlier copy
    assert [p.read_bytes() for p in spool.series_files("1.2.3")] == [b"resent"]
    assert not list(spool.root.rglob("*.partial"))
    for bad in ("../../etc", "1.2.3/4", "1..2", "", "1.2.abc", "1" * 65):
        assert not is_valid_uid(bad)
        with pytest.raises(ValueError):
            spool.store_instance("1.2.3", bad, b"x")
        with pytest.raises(ValueError):
            spool.series_dir(bad)
    batch, n = spool.snapshot("1.2.3", 1)
    assert n == 1 and (batch / "1.2.3.4.dcm").read_bytes() == b"resent"
    spool.remove_batch(batch)
    assert not batch.exists()


def test_watermark(tmp_path: Path):
    assert Spool(tmp_path, min_free_bytes=0).has_room(1)
    assert not Spool(tmp_path, min_free_bytes=10**18).has_room(1)


def test_spool_watermark_in_bytes_with_the_older_mib_name_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert load_settings(peers=PEERS).min_free_disk_bytes == 2**30
    assert load_settings(peers=PEERS, min_free_disk_bytes=5000).min_free_disk_bytes == 5000
    cfg = tmp_path / "listener.toml"
    cfg.write_text("min_free_disk_mb = 2.5\n")  # a configuration file written before the rename
    assert load_settings(cfg, peers=PEERS).min_free_disk_bytes == int(2.5 * 2**20)
    monkeypatch.setenv("PAROTID_LISTENER_MIN_FREE_DISK_MB", "3")
    assert load_settings(peers=PEERS).min_free_disk_bytes == 3 * 2**20
    with pytest.raises(ValidationError, match="older name"):
        load_settings(peers=PEERS, min_free_disk_bytes=5000)
