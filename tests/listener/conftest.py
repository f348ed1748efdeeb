"""Fixtures for the listener tests: the oracle model store, phantom CT series (new UIDs each time), the service's
job store + embedded dispatcher, in-process listeners on free ports, and DCMTK ``storescp`` peers.

Real components only: pynetdicom's server, DCMTK ``storescu``/``echoscu``/``storescp`` as the outside peers, the
service's ``JobService`` running the real pipeline with the oracle bundle (a hand-set network; no accuracy claim).
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from tests.conftest import require_tool
from tests.dicom_factory import write_ct_series
from tests.support.net import free_port, wait_for

LISTENER_AE = "PAROTID_SEG"
SCANNER_AE = "SCANNER"
SERIES_SHAPE_ZYX = (48, 64, 64)
SERIES_SPACING_MM_ZYX = (2.5, 4.0, 4.0)


def audit(listener, event: str | None = None) -> list[dict]:
    return [r for r in listener.audit.read() if event is None or r["event"] == event]


@dataclass
class Series:
    folder: Path
    files: list[Path]
    series_uid: str


@dataclass
class StoreSCP:
    ae_title: str
    port: int
    out_dir: Path
    proc: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()  # e.g. the TLS options

    def start(self) -> StoreSCP:
        exe = require_tool("storescp")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, *self.extra_args, "-aet", self.ae_title, "-od", str(self.out_dir), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._listening, 10, f"storescp on port {self.port}")
        return self

    def _listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def received(self) -> list[Path]:
        return sorted(p for p in self.out_dir.iterdir() if p.is_file()) if self.out_dir.is_dir() else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def run_tool(*cmd: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool(cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=timeout_s)


def self_signed_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for 127.0.0.1 / localhost made by the openssl CLI, and its key."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    made = run_tool(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
    )
    assert made.returncode == 0, made.stderr
    return cert, key


def storescu(port: int, files: list[Path], calling_ae: str = SCANNER_AE, called_ae: str = LISTENER_AE):
    return run_tool("storescu", "-aet", calling_ae, "-aec", called_ae, "127.0.0.1", str(port), *map(str, files))


def echoscu(port: int, calling_ae: str = SCANNER_AE, called_ae: str = LISTENER_AE, *extra: str):
    return run_tool("echoscu", *extra, "-aet", calling_ae, "-aec", called_ae, "127.0.0.1", str(port))


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The oracle bundle (labels by intensity, promoted): outputs are known and inference takes milliseconds."""
    from tests.bundle_factory import build_oracle_bundle

    store = tmp_path_factory.mktemp("model_store")
    build_oracle_bundle(store, promote=True)
    return store


@pytest.fixture
def make_series(tmp_path: Path) -> Callable[..., Series]:
    """``make(n_slices=48)``: a n x 64 x 64 oracle phantom at 2.5x4x4 mm (HFS) as a CT series; new UIDs each call.
    ``blanked=True`` blanks one axial slice through the glands to air inside the skin outline (QA `review`)."""
    from tests.bundle_factory import oracle_phantom

    counter = iter(range(1000))

    def make(n_slices: int = SERIES_SHAPE_ZYX[0], blanked: bool = False) -> Series:
        folder = tmp_path / f"ct{next(counter)}"
        nz, ny, nx = (n_slices, *SERIES_SHAPE_ZYX[1:])
        hu, masks = oracle_phantom((nz, ny, nx))
        if blanked:
            k = int(np.flatnonzero(masks["Parotid_L"].any(axis=(1, 2)))[4])
            hu[k][hu[k] > -500] = -1000.0
            hu[k][:, [8, nx - 9]] = 0.0  # the skin outline survives
            hu[k][[8, ny - 9], 8 : nx - 8] = 0.0
        origin = (-(nx - 1) * 2.0, -(ny - 1) * 2.0, -60.0)
        files = write_ct_series(folder, hu, SERIES_SPACING_MM_ZYX, origin, "HFS")
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        return Series(folder, files, uid)

    return make


@pytest.fixture
def job_service(tmp_path: Path, model_store: Path) -> Iterator[Any]:
    """The service's own job store and embedded dispatcher (what ``parotid-seg serve`` uses without a broker)."""
    from service.config import Settings
    from service.jobs.service import JobService
    from service.worker.dispatcher import make_dispatcher

    service = JobService.from_settings(
        Settings(job_dir=tmp_path / "jobs", model_store=model_store, broker_url=None), make_dispatcher
    )
    yield service
    service.close()


@pytest.fixture
def start_listener(tmp_path: Path, job_service: Any) -> Iterator[Callable[..., Any]]:
    """``start_listener(**settings)``: a started in-process Listener on a free port (stopped at teardown)."""
    from service.listener.jobs import ServiceJobBackend
    from service.listener.listener import Listener
    from service.listener.settings import load_settings

    started: list[Any] = []

    def start(**overrides: Any):
        values: dict[str, Any] = {
            "spool_dir": tmp_path / f"spool{len(started)}",
            "port": 0,
            "bind_host": "127.0.0.1",
            "quiet_time_s": 1.0,
            "release_grace_s": 0.3,
            "poll_interval_s": 0.2,
            "delivery_backoff_s": 0.5,
            "delivery_backoff_max_s": 4.0,
            "delivery_timeout_s": 5.0,
            "network_timeout_s": 10.0,
            "peers": [{"ae_title": SCANNER_AE, "return_mode": "none"}],
        }
        values.update(overrides)
        listener = Listener(load_settings(**values), ServiceJobBackend(job_service)).start(port=0)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


@pytest.fixture
def storescp_factory(tmp_path: Path) -> Iterator[Callable[..., StoreSCP]]:
    """``storescp_factory(ae_title, port=None, start=True, extra_args=())``: a DCMTK storescp writing into its own
    folder (``extra_args``: more storescp options, e.g. TLS)."""
    peers: list[StoreSCP] = []

    def make(
        ae_title: str = "TPS", port: int | None = None, start: bool = True, extra_args: tuple[str, ...] = ()
    ) -> StoreSCP:
        scp = StoreSCP(ae_title, port or free_port(), tmp_path / f"scp_{ae_title}_{len(peers)}", extra_args=extra_args)
        peers.append(scp)
        return scp.start() if start else scp

    yield make
    for scp in peers:
        scp.stop()


def jobs_for_series(job_service: Any, series_uid: str) -> list[Any]:
    return [r for r in job_service.list_jobs() if r.series_instance_uid == series_uid]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
