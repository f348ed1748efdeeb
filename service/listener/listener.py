"""``Listener``: the SCP, the spool, the completeness tracker, the job backend and the return path, wired together.

Reception runs on pynetdicom's association threads (``scp.StorageHandlers``). One background loop thread turns
ready series into jobs (a hard-linked snapshot of the spooled series is submitted to the service's job store,
whose idempotency decides whether it is a new job), drops expired spool data, and follows submitted jobs; when a
job succeeds its RTSTRUCT is queued for delivery (``delivery.DeliveryQueue``, its own threads). A series the
job store already processed follows the peer's ``on_resend`` (redeliver the existing result, ignore, or
recompute). Jobs being followed are recorded in ``<spool>/active/`` so a restart still delivers their results.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from service.errors import EnvironmentFault, ErrorCode, InputError
from service.fileio import default_file_mode, write_atomic
from service.listener.admission import PeerAdmission
from service.listener.audit import AuditLog
from service.listener.delivery import DeliveryQueue, Destination, send_rtstruct
from service.listener.jobs import JobBackend, SubmitLater, owner_for_ae
from service.listener.review_hold import ReviewHolds
from service.listener.scp import StorageHandlers, build_ae, start_server
from service.listener.series_budget import SeriesBudget
from service.listener.settings import ListenerSettings
from service.listener.spool import Spool
from service.listener.tracker import Origin, ReadySeries, SeriesTracker
from service.pipeline.budget import memory_budget_bytes

log = logging.getLogger(__name__)
DISPATCHED_MARKER = ".dispatched.json"
TICK_S = 0.2


@dataclass
class ActiveJob:
    job_id: str
    series_uid: str
    calling_ae: str
    destination: Destination | None
    review_before_send: bool = False  # the peer's RTSTRUCT waits for approval (service.listener.review_hold)
    redelivery: str = ""  # non-empty: the series was sent again, its existing result goes out again (on_resend)
    qa_hold: str = "fail"  # the peer's QA delivery policy (PeerConfig.qa_hold): none, fail or review


_QA_RANK = {"ok": 0, "review": 1, "fail": 2}


def held_for_qa(qa_status: str | None, policy: str) -> bool:
    """True when a result with ``qa_status`` must wait for review under the peer's ``qa_hold`` policy."""
    if policy == "none" or qa_status not in _QA_RANK:
        return False
    return _QA_RANK[qa_status] >= _QA_RANK[policy]


def resolve_destination(settings: ListenerSettings, origin: Origin) -> Destination | None:
    """Where the result of a series from ``origin`` goes (None: keep it in the job store only)."""
    peer = settings.peer(origin.calling_ae)
    if peer is None or peer.return_mode == "none" or peer.return_port is None:
        return None
    ae = peer.return_ae_title or origin.calling_ae
    if peer.return_mode == "fixed":
        return Destination(ae, peer.return_host or "", peer.return_port, tls=peer.return_tls)
    return Destination(ae, origin.peer_host, peer.return_port, tls=peer.return_tls)


def series_budget(settings: ListenerSettings, jobs: JobBackend) -> SeriesBudget:
    """The per-C-STORE memory budget: ``memory_budget_mb`` of the listener, else the job service's (with the
    model's plan spacing when the backend knows it), else ``PAROTID_MEMORY_BUDGET_MB`` / the default."""
    limits = getattr(jobs, "memory_limits", None)
    budget, spacing = limits(settings.model) if limits is not None else (memory_budget_bytes(), None)
    if settings.memory_budget_mb is not None:
        budget = settings.memory_budget_mb * 2**20
    return SeriesBudget(budget, spacing)


class Listener:
    def __init__(self, settings: ListenerSettings, jobs: JobBackend, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.jobs = jobs
        self.clock = clock
        root = Path(settings.spool_dir)
        self.spool = Spool(root, min_free_bytes=settings.min_free_disk_bytes)
        self.audit = AuditLog(root / "audit.jsonl")
        self.tracker = SeriesTracker(
            settings.quiet_time_s,
            settings.release_grace_s,
            settings.partial_timeout_s,
            settings.finished_retention_s,
            clock=clock,
        )
        admission = PeerAdmission(
            self.audit,
            per_peer=settings.max_associations_per_peer,
            idle_s=settings.idle_association_timeout_s,
            network_timeout_s=settings.network_timeout_s,
        )
        self.handlers = StorageHandlers(self.spool, self.tracker, self.audit, admission, series_budget(settings, jobs))
        self.delivery = DeliveryQueue(
            root,
            settings.ae_title,
            self.audit,
            attempts=settings.delivery_attempts,
            backoff_s=settings.delivery_backoff_s,
            backoff_max_s=settings.delivery_backoff_max_s,
            timeout_s=settings.delivery_timeout_s,
            workers=settings.delivery_workers,
            sender=functools.partial(send_rtstruct, tls_context=settings.return_tls_context()),
        )
        self.holds = ReviewHolds(root, jobs, self.delivery, self.audit)
        self.active_dir = root / "active"
        self.active_dir.mkdir(parents=True, exist_ok=True)
        self._active: dict[str, ActiveJob] = {}
        self._retry: list[tuple[float, ReadySeries]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = None
        self._last_poll = 0.0

    # ------------------------------------------------------------------ lifecycle
    def start(self, port: int | None = None) -> Listener:
        """Recover the spool, start delivery, the loop thread and the SCP (``port`` 0 picks a free port)."""
        self._recover()
        self.delivery.start()
        self._thread = threading.Thread(target=self._loop, name="listener-loop", daemon=True)
        self._thread.start()
        self._server = start_server(build_ae(self.settings), self.settings, self.handlers, port)
        log.info("listening as %s on %s:%d", self.settings.ae_title, self.settings.bind_host, self.port)
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("listener not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop accepting, finish the loop, stop delivery (pending deliveries stay in the outbox). Idempotent."""
        if self._stop.is_set():
            return
        if self._server is not None:
            self._server.shutdown()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.delivery.stop()

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive anything one series does
                log.exception("listener loop iteration failed")

    def tick(self) -> None:
        ready, expired = self.tracker.poll()
        now = self.clock()
        due = [r for t, r in self._retry if t <= now]
        self._retry = [(t, r) for t, r in self._retry if t > now]
        for r in ready + due:
            try:
                self._dispatch(r)
            except Exception as exc:  # noqa: BLE001 - one series must not stop the others; it is tried again
                log.exception("dispatch of series %s failed", r.series_uid)
                self._defer(r, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__} (details in the listener log)", 60.0)
        for e in expired:
            self.spool.remove_series(e.series_uid)
            if self.handlers.series_budget is not None:
                self.handlers.series_budget.forget(e.series_uid)
            self.audit.record("series_expired", series_uid=e.series_uid, reason=e.reason, n_instances=e.n_instances)
        if now - self._last_poll >= self.settings.poll_interval_s:
            self._last_poll = now
            self.jobs.maintenance()
            for job in list(self._active.values()):
                try:
                    self._follow(job)
                except Exception:  # noqa: BLE001 - followed again at the next poll
                    log.exception("following job %s failed", job.job_id)
            self.holds.poll()

    def _dispatch(self, r: ReadySeries) -> None:
        batch, n = self.spool.snapshot(r.series_uid, r.generation)
        self.audit.record(
            "series_ready",
            series_uid=r.series_uid,
            generation=r.generation,
            n_instances=n,
            calling_ae=r.origin.calling_ae,
            peer_host=r.origin.peer_host,
            reason=r.reason,
        )
        peer = self.settings.peer(r.origin.calling_ae)
        on_resend = peer.on_resend if peer is not None else "redeliver"
        try:
            sub = self.jobs.submit(
                batch,
                series_uid=r.series_uid,
                model=self.settings.model,
                owner=owner_for_ae(r.origin.calling_ae),
                recompute=on_resend == "recompute",
            )
        except EnvironmentFault as exc:  # the model store, not the series: try again once it is fixed
            self._defer(r, str(exc.code), exc.message, 60.0)
            return
        except InputError as exc:
            self.audit.record(
                "job_rejected",
                series_uid=r.series_uid,
                generation=r.generation,
                calling_ae=r.origin.calling_ae,
                error_code=str(exc.code),
                error=exc.message,
            )
            return
        except SubmitLater as exc:
            self._defer(r, exc.code, exc.message, min(max(exc.retry_after_s, 1.0), 60.0))
            return
        finally:
            self.spool.remove_batch(batch)
        self._write_marker(r.series_uid, sub.job_id, n)
        job = ActiveJob(
            sub.job_id,
            r.series_uid,
            r.origin.calling_ae,
            resolve_destination(self.settings, r.origin),
            review_before_send=bool(peer and peer.review_before_send),
            redelivery=uuid.uuid4().hex[:12] if sub.existing and on_resend == "redeliver" else "",
            qa_hold=peer.qa_hold if peer else "fail",
        )
        ignored = sub.existing and on_resend == "ignore"  # nothing goes back (a first send still running is followed)
        if not ignored:
            self._active[job.job_id] = job
            self._save_active(job)
        self.audit.record(
            "job_submitted",
            series_uid=r.series_uid,
            generation=r.generation,
            n_instances=n,
            job_id=sub.job_id,
            existing_job=sub.existing,
            on_resend=on_resend if sub.existing else None,
            calling_ae=r.origin.calling_ae,
            destination=job.destination.label if job.destination else None,
        )
        if not ignored:
            self._follow(job)

    def _defer(self, r: ReadySeries, code: str, message: str, delay_s: float) -> None:
        """Submit the series again after ``delay_s`` (from the spool, which still holds every instance)."""
        self._retry.append((self.clock() + delay_s, r))
        self.audit.record(
            "job_deferred",
            series_uid=r.series_uid,
            generation=r.generation,
            error_code=code,
            error=message,
            next_attempt_in_s=delay_s,
        )

    def _follow(self, job: ActiveJob) -> None:
        view = self.jobs.poll(job.job_id)
        if not view.done:
            return
        self._active.pop(job.job_id, None)
        (self.active_dir / f"{job.job_id}.json").unlink(missing_ok=True)
        self.audit.record(
            "job_finished",
            job_id=job.job_id,
            series_uid=job.series_uid,
            job_state=view.state,
            error_code=view.error_code,
        )
        if view.state == "succeeded" and job.destination is not None and view.rtstruct_path is not None:
            if job.review_before_send:
                self.holds.hold(job)
            elif held_for_qa(view.qa_status, job.qa_hold):
                self.holds.hold(job, reason=f"QA {view.qa_status} (peer policy: hold {job.qa_hold})")
            else:
                self.delivery.enqueue(
                    job.job_id, job.series_uid, view.rtstruct_path, job.destination, redelivery=job.redelivery
                )

    # ------------------------------------------------------------------ persistence
    def _write_marker(self, series_uid: str, job_id: str, n_instances: int) -> None:
        folder = self.spool.series_dir(series_uid)
        if folder.is_dir():
            marker = json.dumps({"job_id": job_id, "n_instances": n_instances}).encode()
            write_atomic(folder / DISPATCHED_MARKER, marker, mode=default_file_mode(), suffix=".partial")

    def _save_active(self, job: ActiveJob) -> None:
        data = json.dumps(asdict(job)).encode()
        write_atomic(self.active_dir / f"{job.job_id}.json", data, mode=default_file_mode(), suffix=".partial")

    def _recover(self) -> None:
        """Re-register spooled series and followed jobs left by an earlier process."""
        self.spool.clean_partials()
        unknown = Origin("", "")
        for uid in self.spool.spooled_series():
            files = self.spool.series_files(uid)
            if not files:
                self.spool.remove_series(uid)
                continue
            marker = self.spool.series_dir(uid) / DISPATCHED_MARKER
            dispatched = False
            if marker.is_file():
                try:
                    dispatched = json.loads(marker.read_text()).get("n_instances") == len(files)
                except ValueError:
                    dispatched = False
            self.tracker.recover(uid, [f.stem for f in files], unknown, dispatched)
        for f in self.active_dir.glob("*.json"):
            try:
                d = json.loads(f.read_text())
                dest = Destination(**d["destination"]) if d.get("destination") else None
                self._active[d["job_id"]] = ActiveJob(
                    d["job_id"],
                    d["series_uid"],
                    d["calling_ae"],
                    dest,
                    bool(d.get("review_before_send", False)),
                    str(d.get("redelivery", "")),
                    str(d.get("qa_hold", "fail")),
                )
            except (ValueError, KeyError, TypeError):
                f.unlink(missing_ok=True)
        self.holds.recover(ActiveJob)

    # ------------------------------------------------------------------ introspection (tests, health)
    def idle(self) -> bool:
        """Nothing pending anywhere: no open association, no series waiting, no job followed, no delivery."""
        return (
            self.handlers.open_associations() == 0
            and self.tracker.counts()["series_pending"] == 0
            and not self._active
            and not self._retry
            and self.delivery.pending() == 0
        )
