"""``ReviewCase``: one job's review folder: revisions, the decision, and the listener's delivery hold.

Safe under concurrent reviewers (several API processes on one shared job store): every change holds an
``fcntl.flock`` on ``review/.lock``. A revision names the revision it edits; when that is not the latest it is
refused (``Conflict`` -> HTTP 409), unless it is the very same edit already saved (then the existing revision
is returned: a retried request is idempotent). A decision is final: the same decision again returns the stored
one; another decision, or a new revision after a decision, is a conflict.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom

from service.errors import ErrorCode, ServiceError
from service.fileio import write_atomic
from service.jobs.models import OUTPUT_DIR
from service.jobs.models import RTSTRUCT_FILE as OUTPUT_RTSTRUCT
from service.review.cache import (
    GEOMETRY_FILE,
    MASKS_FILE,
    REVIEW_DIR,
    REVISION_FILE,
    REVISIONS_DIR,
    RTSTRUCT_FILE,
    volume_cc,
)
from service.review.models import Decision, Hold, Release, ReviewGeometry, Revision
from service.review.nifti import nifti_bytes, read_nifti_zyx
from service.review.rtstruct_revision import build_approved, build_revision, save_dataset

DECISION_FILE = "decision.json"
APPROVED_FILE = "approved.dcm"
HOLD_FILE = "hold.json"
RELEASE_FILE = "release.json"


class ReviewError(ServiceError):
    """A refused review operation; its HTTP status is the error catalogue's (``service.errors``)."""

    @property
    def status(self) -> int:
        return self.spec.http_status or 400


def conflict(code: ErrorCode, message: str) -> ReviewError:
    return ReviewError(code, message)


class ReviewCase:
    def __init__(self, job_folder: Path, job_id: str) -> None:
        self.job_folder = Path(job_folder)
        self.job_id = job_id
        self.dir = self.job_folder / REVIEW_DIR

    # ------------------------------------------------------------------ reading
    @property
    def available(self) -> bool:
        return (self.dir / GEOMETRY_FILE).is_file()

    def geometry(self) -> ReviewGeometry:
        if not self.available:
            raise ReviewError(ErrorCode.REVIEW_NOT_AVAILABLE, f"job {self.job_id} has no review data")
        return ReviewGeometry.model_validate_json((self.dir / GEOMETRY_FILE).read_bytes())

    def revisions(self) -> list[Revision]:
        out = []
        for path in (self.dir / REVISIONS_DIR).glob(f"*/{REVISION_FILE}"):
            out.append(Revision.model_validate_json(path.read_bytes()))
        return sorted(out, key=lambda r: r.number)

    def latest(self) -> Revision:
        revs = self.revisions()
        if not revs:
            raise ReviewError(ErrorCode.REVIEW_NOT_AVAILABLE, f"job {self.job_id} has no review data")
        return revs[-1]

    def revision(self, number: int) -> Revision:
        path = self.dir / REVISIONS_DIR / str(int(number)) / REVISION_FILE
        if not path.is_file():
            raise ReviewError(ErrorCode.REVISION_NOT_FOUND, f"job {self.job_id} has no revision {number}")
        return Revision.model_validate_json(path.read_bytes())

    def masks_path(self, number: int) -> Path:
        self.revision(number)
        return self.dir / REVISIONS_DIR / str(int(number)) / MASKS_FILE

    def rtstruct_path(self, number: int) -> Path:
        self.revision(number)
        if number == 0:
            return self.job_folder / OUTPUT_DIR / OUTPUT_RTSTRUCT
        return self.dir / REVISIONS_DIR / str(int(number)) / RTSTRUCT_FILE

    def decision(self) -> Decision | None:
        path = self.dir / DECISION_FILE
        return Decision.model_validate_json(path.read_bytes()) if path.is_file() else None

    def final_rtstruct(self) -> Path | None:
        """What an approval delivers: the APPROVED copy when marking is enabled, else the approved revision."""
        d = self.decision()
        if d is None or d.decision != "approved":
            return None
        approved = self.dir / APPROVED_FILE
        return approved if approved.is_file() else self.rtstruct_path(d.revision)

    def hold(self) -> Hold | None:
        path = self.dir / HOLD_FILE
        return Hold.model_validate_json(path.read_bytes()) if path.is_file() else None

    def release(self) -> Release | None:
        path = self.dir / RELEASE_FILE
        return Release.model_validate_json(path.read_bytes()) if path.is_file() else None

    # ------------------------------------------------------------------ changing
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.geometry()
        fd = os.open(self.dir / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def add_revision(
        self, labels_zyx: np.ndarray, *, base: int, author: str, gland: str | None = None
    ) -> tuple[Revision, bool]:
        """Save ``labels_zyx`` (label map on the CT grid) as the revision after ``base``; returns (revision,
        created). ``gland``: take only that structure from ``labels_zyx``, the others from ``base``."""
        geometry = self.geometry()
        known = {g.label: g for g in geometry.glands}
        if gland is not None and gland not in {g.name for g in geometry.glands}:
            raise ReviewError(ErrorCode.UNKNOWN_STRUCTURE, f"no structure named {gland!r} in this result")
        bad = sorted(set(np.unique(labels_zyx).tolist()) - set(known) - {0})
        if bad:
            raise ReviewError(ErrorCode.BAD_LABEL, f"label value(s) {bad} name no structure (known: {sorted(known)})")
        with self._locked():
            if self.decision() is not None:
                raise conflict(ErrorCode.REVIEW_DECIDED, f"job {self.job_id} was already {self.decision().decision}")  # type: ignore[union-attr]
            latest = self.latest()
            base_labels = read_nifti_zyx(self.masks_path(base)) if base <= latest.number else None
            if base_labels is None:
                raise ReviewError(ErrorCode.REVISION_NOT_FOUND, f"job {self.job_id} has no revision {base}")
            new = labels_zyx.astype(np.uint8)
            if gland is not None:
                g = next(x for x in geometry.glands if x.name == gland)
                new = base_labels.copy()
                new[base_labels == g.label] = 0
                new[labels_zyx == g.label] = g.label
            if base != latest.number:
                latest_labels = read_nifti_zyx(self.masks_path(latest.number))
                if latest.base == base and np.array_equal(latest_labels, new):
                    return latest, False  # the same edit, sent again
                raise conflict(
                    ErrorCode.REVISION_STALE,
                    f"revision {base} is not the latest (revision {latest.number} was saved at "
                    f"{latest.created_at:%H:%M:%S} by {latest.author}); reload and edit the latest",
                )
            added = {
                g.name: int(np.count_nonzero((new == g.label) & (base_labels != g.label))) for g in geometry.glands
            }
            removed = {
                g.name: int(np.count_nonzero((base_labels == g.label) & (new != g.label))) for g in geometry.glands
            }
            edited = {name for name in added if added[name] or removed[name]}
            if not edited:
                raise ReviewError(ErrorCode.NO_CHANGE, f"the mask equals revision {base}; nothing to save")
            number = latest.number + 1
            masks = {g.name: new == g.label for g in geometry.glands}
            original = pydicom.dcmread(self.rtstruct_path(0))
            ds = build_revision(original, geometry, masks, edited, number)
            tmp = self.dir / REVISIONS_DIR / f".{number}.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                save_dataset(ds, tmp / RTSTRUCT_FILE)
                write_atomic(tmp / MASKS_FILE, nifti_bytes(new, geometry.spacing_mm_zyx, geometry.origin_lps))
                revision = Revision(
                    number=number,
                    base=base,
                    created_at=datetime.now(UTC),
                    author=author,
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    edited=sorted(edited),
                    voxels_added={k: v for k, v in added.items() if k in edited},
                    voxels_removed={k: v for k, v in removed.items() if k in edited},
                    volume_cc=volume_cc(new, geometry.glands, geometry.spacing_mm_zyx),
                )
                write_atomic(tmp / REVISION_FILE, revision.model_dump_json(indent=2).encode())
                os.rename(tmp, self.dir / REVISIONS_DIR / str(number))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return revision, True

    def decide(
        self, decision: str, *, reviewer: str, comment: str, revision: int, owner: str, mark_approved: bool
    ) -> tuple[Decision, bool]:
        """Record the decision on ``revision`` (must be the latest); returns (decision, created)."""
        with self._locked():
            existing = self.decision()
            if existing is not None:
                if existing.decision == decision and existing.revision == revision:
                    return existing, False
                raise conflict(
                    ErrorCode.REVIEW_DECIDED,
                    f"job {self.job_id} was already {existing.decision} (revision {existing.revision}) by "
                    f"{existing.reviewer}; a decision is final",
                )
            latest = self.latest()
            if revision != latest.number:
                raise conflict(
                    ErrorCode.REVISION_STALE,
                    f"revision {revision} is not the latest (revision {latest.number}); reload",
                )
            approved_uid = None
            if decision == "approved" and mark_approved:
                ds = build_approved(pydicom.dcmread(self.rtstruct_path(revision)), reviewer)
                save_dataset(ds, self.dir / APPROVED_FILE)
                approved_uid = str(ds.SOPInstanceUID)
            record = Decision(
                decision=decision,  # type: ignore[arg-type]
                reviewer=reviewer,
                comment=comment,
                revision=revision,
                decided_at=datetime.now(UTC),
                owner=owner,
                approved_sop_instance_uid=approved_uid,
            )
            write_atomic(self.dir / DECISION_FILE, record.model_dump_json(indent=2).encode())
            return record, True

    def mark_held(self, destination: str) -> Hold:
        """The listener keeps this job's RTSTRUCT until a decision (idempotent)."""
        existing = self.hold()
        if existing is not None:
            return existing
        hold = Hold(destination=destination, held_at=datetime.now(UTC))
        write_atomic(self.dir / HOLD_FILE, hold.model_dump_json(indent=2).encode())
        return hold

    def mark_released(self, release: Release) -> None:
        write_atomic(self.dir / RELEASE_FILE, release.model_dump_json(indent=2).encode())
