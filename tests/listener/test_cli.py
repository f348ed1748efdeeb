"""The real ``parotid-seg listen`` subprocess: echoscu, storescu in, RTSTRUCT out at storescp, clean SIGTERM, and
no patient name or ID anywhere in its output or audit log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pydicom

from tests.conftest import REPO_ROOT
from tests.dicom_factory import TEST_PATIENT_ID, TEST_PATIENT_NAME
from tests.listener.conftest import SCANNER_AE, echoscu, storescu
from tests.support.net import wait_for

STARTED_RE = re.compile(r"parotid-seg listen: \S+ on [\d.]+:(\d+)")


def test_parotid_seg_listen_subprocess_round_trip(tmp_path: Path, model_store: Path, make_series, storescp_factory):
    tps = storescp_factory("TPS")
    spool = tmp_path / "spool"
    env = {
        **os.environ,
        "PAROTID_JOB_DIR": str(tmp_path / "jobs"),
        "PAROTID_LISTENER_QUIET_TIME_S": "1",
        "PAROTID_LISTENER_RELEASE_GRACE_S": "0.3",
        "PAROTID_LISTENER_POLL_INTERVAL_S": "0.2",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PAROTID_BROKER_URL", None)
    cmd = [
        sys.executable,
        "-m",
        "service.cli",
        "--model-store",
        str(model_store),
        "listen",
        "--port",
        "0",
        "--bind-host",
        "127.0.0.1",
        "--spool-dir",
        str(spool),
        "--peer",
        f"{SCANNER_AE}=sender:{tps.port}:TPS",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        started = wait_for(
            lambda: next((m for m in map(STARTED_RE.search, list(lines)) if m), None),
            60,
            "the listener's start-up line",
        )
        port = int(started.group(1))
        assert echoscu(port).returncode == 0
        series = make_series()
        sent = storescu(port, series.files)
        assert sent.returncode == 0, sent.stderr
        (rtstruct,) = wait_for(tps.received, 150, "the RTSTRUCT at storescp")
        ds = pydicom.dcmread(rtstruct)
        assert ds.Modality == "RTSTRUCT" and ds.StudyInstanceUID == pydicom.dcmread(series.files[0]).StudyInstanceUID
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        reader.join(timeout=5)
    assert rc == 0, "".join(lines[-30:])
    output = "".join(lines) + (spool / "audit.jsonl").read_text()
    assert '"event": "delivered"' in output
    for phi in (TEST_PATIENT_NAME, TEST_PATIENT_ID, *TEST_PATIENT_NAME.split("^")):
        assert phi not in output
