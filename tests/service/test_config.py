"""Settings: read from PAROTID_* variables, unsafe values refused with the setting named; the CLI entry points."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cli import main
from service.config import ConfigError, Settings, hash_api_key, read_keys_file

GOOD = hash_api_key("k1")


def test_environment_is_read_and_paths_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAROTID_JOB_DIR", "rel/jobs")
    monkeypatch.setenv("PAROTID_API_KEYS", f"alice={GOOD}, bob={hash_api_key('k2')}")
    monkeypatch.setenv("PAROTID_MAX_UPLOAD_FILES", "12")
    s = Settings()
    assert s.job_dir == tmp_path / "rel" / "jobs" and s.max_upload_files == 12
    assert s.api_key_owners() == {GOOD: "alice", hash_api_key("k2"): "bob"}
    assert not s.celery_mode and s.max_attempts == 3


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"api_keys": "alice=k1"}, "never the key itself"),  # a plain key instead of its hash
        ({"api_keys": f"al/ice={GOOD}"}, "owner"),
        ({"api_keys": GOOD}, "owner=sha256"),
        ({"broker_url": "amqp://guest@localhost//"}, "redis"),
        ({"job_time_limit_s": 3600, "visibility_timeout_s": 3600}, "PAROTID_VISIBILITY_TIMEOUT_S (3600) must exceed"),
        ({"job_time_limit_s": 100, "hard_limit_grace_s": 10, "visibility_timeout_s": 110}, "deliver a running job"),
        ({"max_upload_bytes": 0}, "max_upload_bytes"),
        ({"max_upload_files": -1}, "max_upload_files"),
        ({"zip_max_ratio": 0.5}, "zip_max_ratio"),
        ({"retention_s": 0}, "retention_s"),
        ({"embedded_workers": 0}, "embedded_workers"),
        ({"queue_name": "a b"}, "queue_name"),
        ({"job_dir": "/"}, "root"),
        ({"api_keys_file": "/nonexistent/keys"}, "no such file"),
    ],
)
def test_unsafe_values_refused(values, needle):
    with pytest.raises(ValidationError) as err:
        Settings(**values)
    assert needle in str(err.value)


def test_keys_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# comment\nalice {GOOD}\n\nbob {hash_api_key('k2')}  # rotated 2026\n")
    assert read_keys_file(path) == {GOOD: "alice", hash_api_key("k2"): "bob"}
    assert Settings(api_keys_file=path).api_key_owners()[GOOD] == "alice"
    path.write_text("alice k1-in-plain-text\n")
    with pytest.raises(ConfigError, match="never the key itself"):
        read_keys_file(path)


def test_app_refuses_to_start_without_keys(tmp_path, model_store):
    from service.api.app import create_app

    with pytest.raises(ConfigError, match="no API keys"):
        create_app(Settings(job_dir=tmp_path / "jobs", model_store=model_store))


def test_serve_new_api_key_and_first_start_bootstrap(tmp_path, capsys, monkeypatch):
    from service.api.app_cli import ensure_api_keys

    assert main(["serve", "--new-api-key", "carol"]) == 0
    out = capsys.readouterr().out
    key = out.split("\n")[1].strip()
    assert f"carol {hash_api_key(key)}" in out
    assert main(["serve", "--new-api-key", "bad owner!"]) == 2

    settings = ensure_api_keys(Settings(job_dir=tmp_path / "var" / "jobs"))
    keys_file = tmp_path / "var" / "api_keys"
    assert settings.api_keys_file == keys_file and oct(keys_file.stat().st_mode & 0o777) == "0o600"
    printed = capsys.readouterr().err.split("Your API key")[1].split()[-1]
    assert settings.api_key_owners() == {hash_api_key(printed): "admin"}
    again = ensure_api_keys(Settings(job_dir=tmp_path / "var" / "jobs"))  # reused, not regenerated
    assert again.api_key_owners() == settings.api_key_owners() and capsys.readouterr().err == ""


def test_cli_config_errors_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("PAROTID_MAX_UPLOAD_BYTES", "-5")
    assert main(["serve"]) == 2
    assert "error[CONFIG]: PAROTID_MAX_UPLOAD_BYTES" in capsys.readouterr().err
    monkeypatch.delenv("PAROTID_MAX_UPLOAD_BYTES")
    monkeypatch.delenv("PAROTID_BROKER_URL", raising=False)
    assert main(["worker"]) == 2
    assert "PAROTID_BROKER_URL is not set" in capsys.readouterr().err


def test_celery_app_reliability_settings(tmp_path: Path):
    from service.worker.celery_app import create_celery

    s = Settings(
        job_dir=tmp_path, broker_url="redis://127.0.0.1:6379/13", job_time_limit_s=600, visibility_timeout_s=900
    )
    conf = create_celery(s).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit == 600 and conf.task_time_limit == 660
    assert conf.broker_transport_options["visibility_timeout"] == 900 > conf.task_time_limit
    assert conf.task_ignore_result and conf.result_expires == s.result_expires_s
