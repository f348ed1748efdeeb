"""The listener's audit log: one JSON object per line, never a patient name or ID.

Events: ``association`` (calling/called AE, peer address, instances stored/refused, non-CT instances dropped by
SOP class name, series UIDs, outcome: released, aborted or rejected), ``series_ready``, ``series_expired``,
``series_refused`` (over the memory budget), ``job_submitted``, ``job_finished``, ``delivery_attempt``,
``delivered`` and ``dead_letter``. Only fields from ``ALLOWED_FIELDS`` are written (AE titles, addresses, UIDs,
counts, statuses, codes, paths inside the spool), so patient attributes cannot reach the log by accident; unknown
fields raise ``ValueError`` in development rather than being written. Each record also goes to the
``parotid.listener.audit`` logger (INFO) for the console.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("parotid.listener.audit")

ALLOWED_FIELDS = frozenset(
    {
        "assoc_id",
        "calling_ae",
        "called_ae",
        "peer_host",
        "peer_port",
        "outcome",
        "reason",
        "tls",
        "n_stored",
        "n_refused",
        "n_dropped",
        "dropped",
        "statuses",
        "series_uids",
        "series_uid",
        "generation",
        "n_instances",
        "job_id",
        "job_state",
        "existing_job",
        "on_resend",
        "redelivery",
        "error_code",
        "error",
        "destination",
        "attempt",
        "max_attempts",
        "next_attempt_in_s",
        "rtstruct_sop_uid",
        "record",
        "duration_s",
        "need_mib",
        "budget_mib",
    }
)


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        unknown = set(fields) - ALLOWED_FIELDS
        if unknown:
            raise ValueError(f"audit fields not allowed (possible PHI): {sorted(unknown)}")
        entry = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
        line = json.dumps(entry, sort_keys=False, default=str)
        if self.path is not None:
            with self._lock, self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        log.info("%s", line)
        return entry

    def read(self) -> list[dict[str, Any]]:
        """Every record written so far (tests, tooling)."""
        if self.path is None or not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
