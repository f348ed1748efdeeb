"""DICOM helpers for ``make chaos``: a ``parotid-seg listen`` subprocess with its audit log, and a pynetdicom SCU
that can release, abort, or drop its connection mid-series."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from bench.chaos_common import Ctx, job_store
from bench.procs import Proc, base_env, free_port, start_listener

LISTENER_AE = "PAROTID_SEG"


class ListenerUnderTest:
    def __init__(self, ctx: Ctx, name: str, peers: list[dict], min_free_disk_bytes: int = 0, **settings: object):
        self.work = ctx.work / name
        self.logs = self.work / "logs"
        self.spool = self.work / "spool"
        env = base_env(
            job_dir=self.work / "jobs",
            model_store=ctx.model.store,
            default_model=ctx.model.spec,
            min_free_disk_bytes=min_free_disk_bytes,
            cleanup_interval_s=3600,
        )
        env["PAROTID_LISTENER_PEERS"] = json.dumps(peers)
        env["PAROTID_LISTENER_SPOOL_DIR"] = str(self.spool)
        env["PAROTID_LISTENER_POLL_INTERVAL_S"] = "0.2"
        for key, value in settings.items():
            env[f"PAROTID_LISTENER_{key.upper()}"] = str(value)
        self.port = free_port()
        self.proc: Proc = start_listener(env, self.logs, self.port)
        self.store = job_store(self.work / "jobs")

    def audit(self, event: str | None = None, **match: object) -> list[dict]:
        path = self.spool / "audit.jsonl"
        if not path.is_file():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [
            r
            for r in records
            if (event is None or r["event"] == event) and all(r.get(k) == v for k, v in match.items())
        ]

    def partial_files(self) -> list[Path]:
        return sorted(self.spool.rglob("*.partial"))

    def close(self) -> None:
        self.proc.stop()


def send(port: int, files: list[Path], calling_ae: str = "SCANNER", end: str = "release") -> list[int]:
    """C-STORE ``files`` in one association, then ``end`` it: release, abort (A-ABORT) or drop (close the TCP
    connection without a word, as a crashed sender would). Returns the statuses (-1: no response)."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=LISTENER_AE)
    if not assoc.is_established:
        raise RuntimeError(f"association to the listener on port {port} was not established")
    statuses = []
    for f in files:
        st = assoc.send_c_store(f)
        statuses.append(int(st.Status) if "Status" in st else -1)
    if end == "release":
        assoc.release()
    elif end == "abort":
        assoc.abort()
    else:
        sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        assoc.kill()
    return statuses


def echo(port: int, calling_ae: str = "SCANNER") -> bool:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=LISTENER_AE)
    if not assoc.is_established:
        return False
    ok = assoc.send_c_echo().get("Status") == 0x0000
    assoc.release()
    return ok


def series_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
