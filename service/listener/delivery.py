"""The return path: send a job's RTSTRUCT by C-STORE, with a C-ECHO check, retries and dead letters.

Each delivery is one association to the destination: C-ECHO first (the peer answers and accepts us), then
C-STORE of the RTSTRUCT. A failed attempt is retried after ``backoff_s * 2**(attempt-1)`` seconds (capped at
``backoff_max_s``); after ``attempts`` failures a dead-letter record (JSON, no patient data) is written in
``dead_letter/`` with the RTSTRUCT next to it, ready to resend by hand, and the delivery is given up. Attempts run
on a small thread pool fed by a scheduler thread, so a destination that is down or slow never holds back other
deliveries, nor the listener's job processing.

Pending deliveries are kept in ``outbox/`` (a JSON record and a copy of the RTSTRUCT, since the job store may
delete its copy before the last retry), reloaded at start-up, so a restart loses nothing; each success leaves a
record in ``delivered/``: the same job is never delivered twice to the same destination, unless the peer sent the
series again and its ``on_resend`` policy is ``redeliver`` (then the delivery has its own ``redelivery`` id).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from service.fileio import default_file_mode, write_atomic
from service.listener.audit import AuditLog

# C-STORE response statuses that mean "stored": success and the warning statuses of the Storage Service Class.
STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int
    tls: bool = False

    @property
    def label(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}" + (" (TLS)" if self.tls else "")


@dataclass
class Delivery:
    job_id: str
    series_uid: str
    rtstruct_path: str
    destination: Destination
    attempt: int = 0
    last_error: str | None = None
    redelivery: str = ""  # non-empty (a fresh id): the result sent again because the peer re-sent the series

    @property
    def key(self) -> str:
        tail = f"|{self.redelivery}" if self.redelivery else ""
        return hashlib.sha256(f"{self.job_id}|{self.destination.label}{tail}".encode()).hexdigest()[:24]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Delivery:
        d = json.loads(text)
        d["destination"] = Destination(**d["destination"])
        return cls(**d)


class DeliveryError(RuntimeError):
    pass


def send_rtstruct(
    path: Path, dest: Destination, calling_ae: str, timeout_s: float, tls_context: ssl.SSLContext | None = None
) -> str:
    """One attempt: associate, C-ECHO, C-STORE ``path``; returns the stored SOP Instance UID or raises.

    A TLS destination needs ``tls_context`` (it verifies the destination's certificate and host name).
    """
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ds = dcmread(path)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    ae.add_requested_context(Verification)
    own_syntax = str(ds.file_meta.TransferSyntaxUID)
    syntaxes = list(dict.fromkeys([own_syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    ae.add_requested_context(ds.SOPClassUID, syntaxes)
    tls_args = None
    if dest.tls:
        if tls_context is None:
            raise DeliveryError(f"{dest.label}: TLS requested but the listener has no TLS client context")
        tls_args = (tls_context, dest.host)
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args)
    except (ssl.SSLError, OSError) as exc:  # certificate refused, TLS handshake failed
        raise DeliveryError(f"association to {dest.label} failed ({exc.__class__.__name__}: {exc})") from exc
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no connection"
        if not assoc.is_rejected and tls_args is not None:
            why += _tls_probe(dest, tls_args[0], timeout_s)
        raise DeliveryError(f"association to {dest.label} failed ({why})")
    try:
        echo = assoc.send_c_echo()
        if not echo or echo.get("Status") != 0x0000:
            raise DeliveryError(f"C-ECHO to {dest.label} failed (status {_status(echo)})")
        st = assoc.send_c_store(ds)
        if not st or st.get("Status") not in STORED_STATUSES:
            raise DeliveryError(f"C-STORE to {dest.label} failed (status {_status(st)})")
    finally:
        if assoc.is_established:
            assoc.release()
    return str(ds.SOPInstanceUID)


def _tls_probe(dest: Destination, ctx: ssl.SSLContext, timeout_s: float) -> str:
    """Why a TLS connection fails (pynetdicom only logs it): one handshake, reported as '; TLS: <reason>'."""
    try:
        with (
            socket.create_connection((dest.host, dest.port), timeout=timeout_s) as raw,
            ctx.wrap_socket(raw, server_hostname=dest.host),
        ):
            return ""
    except (ssl.SSLError, OSError) as exc:
        return f"; TLS: {getattr(exc, 'verify_message', None) or exc}"


def _status(ds) -> str:
    return "none (timeout or abort)" if not ds or "Status" not in ds else f"0x{int(ds.Status):04X}"


class DeliveryQueue:
    def __init__(
        self,
        root: Path,
        calling_ae: str,
        audit: AuditLog,
        *,
        attempts: int,
        backoff_s: float,
        backoff_max_s: float,
        timeout_s: float,
        workers: int = 4,
        sender: Callable[[Path, Destination, str, float], str] = send_rtstruct,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = root / "outbox"
        self.delivered_dir = root / "delivered"
        self.dead_letter_dir = root / "dead_letter"
        for d in (self.outbox, self.delivered_dir, self.dead_letter_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.calling_ae = calling_ae
        self.audit = audit
        self.attempts, self.backoff_s, self.backoff_max_s = attempts, backoff_s, backoff_max_s
        self.timeout_s = timeout_s
        self.sender = sender
        self.clock = clock
        self._heap: list[tuple[float, int, Delivery]] = []
        self._queued: set[str] = set()
        self._seq = 0
        self._cv = threading.Condition()
        self._stop = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="delivery")
        self._thread = threading.Thread(target=self._schedule_loop, name="delivery-scheduler", daemon=True)

    # --- public
    def start(self) -> None:
        for f in sorted(self.outbox.glob("*.json")):
            self._push(Delivery.from_json(f.read_text()), 0.0)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def enqueue(
        self, job_id: str, series_uid: str, rtstruct_path: Path, destination: Destination, *, redelivery: str = ""
    ) -> bool:
        """Queue a delivery; False if this job was already delivered to (or is queued for) that destination.
        ``redelivery`` (a fresh id per re-send of the series) makes it a new delivery of an already sent result."""
        d = Delivery(job_id, series_uid, str(rtstruct_path), destination, redelivery=redelivery)
        with self._cv:
            if d.key in self._queued or (self.delivered_dir / f"{d.key}.json").exists():
                return False
            copy = self.outbox / f"{d.key}.dcm"  # the job store may delete its copy before the last retry
            self._write_bytes(copy, Path(rtstruct_path).read_bytes())
            d.rtstruct_path = str(copy)
            self._write(self.outbox / f"{d.key}.json", d.to_json())
            self._push(d, 0.0)
        return True

    def pending(self) -> int:
        with self._cv:
            return len(self._queued)

    # --- internals
    def _push(self, d: Delivery, delay_s: float) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, (self.clock() + delay_s, self._seq, d))
            self._queued.add(d.key)
            self._cv.notify_all()

    def _schedule_loop(self) -> None:
        while True:
            with self._cv:
                if self._stop:
                    return
                now = self.clock()
                if self._heap and self._heap[0][0] <= now:
                    _, _, d = heapq.heappop(self._heap)
                else:
                    wait = self._heap[0][0] - now if self._heap else 1.0
                    self._cv.wait(timeout=min(max(wait, 0.01), 1.0))
                    continue
            try:
                self._pool.submit(self._attempt, d)
            except RuntimeError:  # pool shut down
                return

    def _attempt(self, d: Delivery) -> None:
        d.attempt += 1
        try:
            sop_uid = self.sender(Path(d.rtstruct_path), d.destination, self.calling_ae, self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure of the peer or network is retried
            d.last_error = str(exc)[:500]
            self._failed(d)
            return
        self.audit.record(
            "delivered",
            job_id=d.job_id,
            series_uid=d.series_uid,
            destination=d.destination.label,
            attempt=d.attempt,
            rtstruct_sop_uid=sop_uid,
            redelivery=bool(d.redelivery),
        )
        with self._cv:
            self._write(self.delivered_dir / f"{d.key}.json", d.to_json())
            (self.outbox / f"{d.key}.json").unlink(missing_ok=True)
            (self.outbox / f"{d.key}.dcm").unlink(missing_ok=True)
            self._queued.discard(d.key)

    def _failed(self, d: Delivery) -> None:
        if d.attempt >= self.attempts:
            record = self.dead_letter_dir / f"{d.key}.json"
            with self._cv:
                kept = self.dead_letter_dir / f"{d.key}.dcm"
                if Path(d.rtstruct_path).is_file():
                    os.replace(d.rtstruct_path, kept)
                    d.rtstruct_path = str(kept)
                self._write(record, d.to_json())
                (self.outbox / f"{d.key}.json").unlink(missing_ok=True)
                self._queued.discard(d.key)
            self.audit.record(
                "dead_letter",
                job_id=d.job_id,
                series_uid=d.series_uid,
                destination=d.destination.label,
                attempt=d.attempt,
                error=d.last_error,
                record=str(record),
            )
            return
        delay_s = min(self.backoff_s * 2 ** (d.attempt - 1), self.backoff_max_s)
        self.audit.record(
            "delivery_attempt",
            job_id=d.job_id,
            series_uid=d.series_uid,
            destination=d.destination.label,
            attempt=d.attempt,
            max_attempts=self.attempts,
            error=d.last_error,
            next_attempt_in_s=round(delay_s, 3),
        )
        with self._cv:
            self._write(self.outbox / f"{d.key}.json", d.to_json())
            self._queued.discard(d.key)
            if not self._stop:
                self._push(d, delay_s)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        DeliveryQueue._write_bytes(path, text.encode())

    @staticmethod
    def _write_bytes(path: Path, data: bytes) -> None:
        write_atomic(path, data, mode=default_file_mode(), suffix=".partial")
