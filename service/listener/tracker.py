"""Series completeness: when a received series becomes a job, and when spooled data is dropped.

DICOM has no "end of series" message, so the rules are time-based, per SeriesInstanceUID:

- *quiet*: no instance for ``quiet_time_s`` -> ready, even if an association is still open;
- *released*: every association that contributed to the series has been released normally (nothing pending) ->
  ready ``release_grace_s`` after the last release/instance. The short grace lets a sender that opens one
  association per instance, or splits a series over several associations, still produce one job;
- *aborted*: if the last contributing association ended with an abort, the series is not made ready by time;
  a new association may complete it, otherwise its spooled data is dropped after ``partial_timeout_s``. This holds
  whatever the order of events: an instance reported for an association that has already ended (a C-STORE still
  in flight when the TCP connection dropped) never re-opens it, and marks the series aborted if that association
  was;
- *finished*: after dispatch, the series' instances stay spooled for ``finished_retention_s`` so that a late
  instance re-forms the whole series (the job store's idempotency then decides whether it is a new job).

The tracker only decides; the listener acts (snapshot, submit, delete). The clock is injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

ENDED_MEMORY = 100_000  # ended association ids remembered (a few MB at most)


@dataclass(frozen=True)
class Origin:
    """Where a series came from: the return path and the audit log need it (no patient data)."""

    calling_ae: str
    peer_host: str


@dataclass
class _Series:
    series_uid: str
    origin: Origin
    last_activity: float
    instances: set[str] = field(default_factory=set)
    pending: int = 0  # instances received since the last dispatch
    open_assocs: set[int] = field(default_factory=set)
    released_at: float | None = None
    aborted: bool = False
    generation: int = 0
    dispatched_at: float | None = None


@dataclass(frozen=True)
class ReadySeries:
    series_uid: str
    generation: int
    n_instances: int
    origin: Origin
    reason: str  # "quiet" | "released"


@dataclass(frozen=True)
class Expired:
    series_uid: str
    reason: str  # "partial_timeout" | "retention"
    n_instances: int


class SeriesTracker:
    def __init__(
        self,
        quiet_time_s: float,
        release_grace_s: float,
        partial_timeout_s: float,
        finished_retention_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quiet_time_s = quiet_time_s
        self.release_grace_s = release_grace_s
        self.partial_timeout_s = partial_timeout_s
        self.finished_retention_s = finished_retention_s
        self.clock = clock
        self._series: dict[str, _Series] = {}
        self._assoc_series: dict[int, set[str]] = {}
        # associations that have ended, with whether they were released (ids are never reused: the SCP numbers
        # them); bounded, oldest dropped first
        self._ended: OrderedDict[int, bool] = OrderedDict()
        self._lock = threading.Lock()

    def instance_received(self, assoc_id: int, series_uid: str, sop_uid: str, origin: Origin) -> None:
        now = self.clock()
        with self._lock:
            s = self._series.get(series_uid)
            if s is None:
                s = self._series[series_uid] = _Series(series_uid, origin, now)
            s.origin = origin
            s.last_activity = now
            s.instances.add(sop_uid)
            s.pending += 1
            ended_released = self._ended.get(assoc_id)
            if ended_released is None:
                s.open_assocs.add(assoc_id)
                s.released_at = None
                self._assoc_series.setdefault(assoc_id, set()).add(series_uid)
            elif not ended_released:  # handled after its association was aborted: the series is a fragment
                s.aborted = True
                s.released_at = None

    def recover(self, series_uid: str, sop_uids: list[str], origin: Origin, dispatched: bool) -> None:
        """Re-register a series found in the spool at start-up (its origin is unknown: ``origin`` is a placeholder).

        A series not yet dispatched is treated as interrupted (as after an abort): it waits for more instances or
        expires after ``partial_timeout_s``; it is never turned into a job from possibly incomplete data.
        """
        now = self.clock()
        with self._lock:
            s = self._series[series_uid] = _Series(series_uid, origin, now, instances=set(sop_uids))
            if dispatched:
                s.dispatched_at = now
            else:
                s.pending = len(sop_uids)
                s.aborted = True

    def association_ended(self, assoc_id: int, released: bool) -> list[str]:
        """Record the end of an association (released normally or aborted); returns the series it touched."""
        now = self.clock()
        with self._lock:
            self._ended[assoc_id] = released
            while len(self._ended) > ENDED_MEMORY:
                self._ended.popitem(last=False)
            touched = sorted(self._assoc_series.pop(assoc_id, set()))
            for uid in touched:
                s = self._series.get(uid)
                if s is None:
                    continue
                s.open_assocs.discard(assoc_id)
                s.aborted = not released
                if released and not s.open_assocs:
                    s.released_at = now
            return touched

    def poll(self) -> tuple[list[ReadySeries], list[Expired]]:
        """Series to dispatch now (marked dispatched) and series whose spool data should be dropped (forgotten)."""
        now = self.clock()
        ready: list[ReadySeries] = []
        expired: list[Expired] = []
        with self._lock:
            for uid, s in list(self._series.items()):
                idle_s = now - s.last_activity
                if s.pending:
                    if s.aborted and not s.open_assocs:
                        if idle_s >= self.partial_timeout_s:
                            expired.append(Expired(uid, "partial_timeout", len(s.instances)))
                            del self._series[uid]
                        continue
                    released = s.released_at is not None and not s.open_assocs
                    reason = None
                    if idle_s >= self.quiet_time_s:
                        reason = "quiet"
                    elif released and s.released_at is not None and now - s.released_at >= self.release_grace_s:
                        reason = "released" if idle_s >= self.release_grace_s else None
                    if reason is not None:
                        s.generation += 1
                        s.pending = 0
                        s.dispatched_at = now
                        ready.append(ReadySeries(uid, s.generation, len(s.instances), s.origin, reason))
                elif not s.open_assocs and idle_s >= self.finished_retention_s:
                    expired.append(Expired(uid, "retention", len(s.instances)))
                    del self._series[uid]
        return ready, expired

    def counts(self) -> dict[str, int]:
        with self._lock:
            pending = sum(1 for s in self._series.values() if s.pending)
            return {"series_pending": pending, "series_finished": len(self._series) - pending}

    def known(self, series_uid: str) -> bool:
        with self._lock:
            return series_uid in self._series
