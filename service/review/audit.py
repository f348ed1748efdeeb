"""The review audit log: ``<job store>/audit/review.jsonl``, one JSON object per line, no patient data.

Events: ``revision_saved`` (job, revision, base, structures edited, voxels added/removed, API key owner) and
``decision`` (job, revision, approved/rejected, reviewer, owner, whether a comment was given: the comment itself
is free text and may name a patient, so it stays in the job folder). Only ``ALLOWED_FIELDS`` are written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("parotid.review.audit")
ALLOWED_FIELDS = frozenset(
    {
        "job_id",
        "owner",
        "revision",
        "base",
        "edited",
        "voxels_added",
        "voxels_removed",
        "decision",
        "reviewer",
        "has_comment",
        "approved_sop_instance_uid",
        "sop_instance_uid",
    }
)


class ReviewAudit:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def record(self, event: str, **fields: Any) -> None:
        unknown = set(fields) - ALLOWED_FIELDS
        if unknown:
            raise ValueError(f"review audit fields not allowed: {sorted(unknown)}")
        line = json.dumps({"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields})
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        log.info("%s", line)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x.strip()]
