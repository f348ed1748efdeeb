"""Review before send: a peer configured with ``review_before_send = true`` gets its RTSTRUCT only once a
reviewer approved it in the review workstation (``service.review``), through the same return path (C-ECHO,
C-STORE, retries, dead letter). A rejected result is never delivered.

When such a job succeeds the listener records a hold (``<spool>/held/<job>.json``, and the destination in the
job's review folder, which the page shows in its confirmation step) instead of queueing the delivery. Every poll
it asks the job backend for the decision: approved -> the approved RTSTRUCT (the decided revision, or its
APPROVED copy when approval marking is on) is queued for delivery; rejected -> the hold is dropped and
``delivery_withheld`` is audited; a job deleted meanwhile -> the hold is dropped. Holds survive a restart.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from service.listener.audit import AuditLog
from service.listener.delivery import DeliveryQueue, Destination

if TYPE_CHECKING:
    from service.listener.listener import ActiveJob

log = logging.getLogger(__name__)


class ReviewHolds:
    def __init__(self, root: Path, jobs, delivery: DeliveryQueue, audit: AuditLog) -> None:
        self.dir = root / "held"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jobs, self.delivery, self.audit = jobs, delivery, audit
        self._held: dict[str, ActiveJob] = {}

    def hold(self, job: ActiveJob, reason: str = "review before send") -> None:
        assert job.destination is not None
        self._held[job.job_id] = job
        tmp = self.dir / f".{job.job_id}.json.partial"
        tmp.write_text(json.dumps(asdict(job)))
        os.replace(tmp, self.dir / f"{job.job_id}.json")
        self.jobs.hold(job.job_id, job.destination.label)
        self.audit.record(
            "delivery_held",
            job_id=job.job_id,
            series_uid=job.series_uid,
            destination=job.destination.label,
            reason=reason,
        )

    def recover(self, make_job) -> None:
        for f in self.dir.glob("*.json"):
            try:
                d = json.loads(f.read_text())
                d["destination"] = Destination(**d["destination"])
                self._held[d["job_id"]] = make_job(**d)
            except (ValueError, KeyError, TypeError):
                f.unlink(missing_ok=True)

    def poll(self) -> None:
        for job in list(self._held.values()):
            try:
                decision, path, revision = self.jobs.review_decision(job.job_id)
            except Exception:  # noqa: BLE001 - asked again at the next poll
                log.exception("review state of job %s", job.job_id)
                continue
            dest = job.destination
            assert dest is not None
            if decision == "approved" and path is not None:
                self.delivery.enqueue(job.job_id, job.series_uid, Path(path), dest)
                self.jobs.released(job.job_id, "queued", dest.label, revision)
                self.audit.record(
                    "delivery_released",
                    job_id=job.job_id,
                    series_uid=job.series_uid,
                    destination=dest.label,
                    reason=f"approved (revision {revision})",
                )
            elif decision == "rejected":
                self.jobs.released(job.job_id, "withheld", dest.label, revision)
                self.audit.record(
                    "delivery_withheld",
                    job_id=job.job_id,
                    series_uid=job.series_uid,
                    destination=dest.label,
                    reason="rejected in review",
                )
            elif decision == "gone":
                self.audit.record("delivery_withheld", job_id=job.job_id, destination=dest.label, reason="job deleted")
            else:
                continue
            self._held.pop(job.job_id, None)
            (self.dir / f"{job.job_id}.json").unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._held)

    def held(self) -> list[str]:
        return list(self._held)
