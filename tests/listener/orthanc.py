"""A real Orthanc PACS on loopback for the tests: its own temporary configuration, ports and storage.

Orthanc comes from Debian (``orthanc``, installed by ``scripts/install-debian-tools.sh``). The configuration
keeps Orthanc's defaults for DICOM (its non-permissive presentation-context negotiation: it proposes each
instance's own transfer syntax plus the uncompressed ones, and fails the send when a context is refused), listens
on 127.0.0.1 only, loads no plugins, and declares the listener as a DICOM modality.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import missing
from tests.support.net import free_port, wait_for

ORTHANC_AE = "ORTHANC"


def orthanc_executable() -> str:
    path = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None)
    if path is None:
        missing("Orthanc (Debian package 'orthanc', installed by scripts/install-debian-tools.sh)")
    return str(path)


@dataclass
class Orthanc:
    root: Path
    modalities: dict[str, list[Any]]
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        exe = orthanc_executable()
        storage = self.root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "test-pacs",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AE,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,  # loopback only, a throw-away instance
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "Plugins": [],
            "DicomModalities": self.modalities,
            "StableAge": 1,
            "ConcurrentJobs": 1,
        }
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=2))
        self.log = self.root / "orthanc.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([exe, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        wait_for(self._up, 30, f"Orthanc on 127.0.0.1:{self.http_port}")
        return self

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            self.get("/system")
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    def raw(self, method: str, path: str, body: bytes | dict | list | None = None) -> bytes:
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.read()

    def request(self, method: str, path: str, body: bytes | dict | list | None = None) -> Any:
        text = self.raw(method, path, body)
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: bytes | dict | list) -> Any:
        return self.request("POST", path, body)

    def upload(self, files: list[Path]) -> list[dict]:
        return [self.post("/instances", f.read_bytes()) for f in files]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
