"""Checks shared by the corpus tests: nothing half-written in a job store or a listener spool."""

from __future__ import annotations

from pathlib import Path

from service.jobs.models import (
    INPUT_DIR,
    JOB_FILE,
    OUTPUT_DIR,
    PREVIEW_FILE,
    QA_FILE,
    RTSTRUCT_FILE,
    UNCERTAINTY_FILE,
)

ALL_OUTPUTS = sorted([PREVIEW_FILE, QA_FILE, RTSTRUCT_FILE, UNCERTAINTY_FILE])  # the worker writes all four


def store_leftovers(root: Path) -> list[str]:
    """Temporary or partial files anywhere in the job store, any ``.upload/`` folder (where upload parts arrive: it
    is removed once the upload is consumed) or anything in one, and anything left in staging/."""
    odd = [
        p for p in root.rglob("*") if p.name.endswith((".partial", ".tmp")) or ".upload" in p.parts[len(root.parts) :]
    ]
    odd += list((root / "staging").iterdir())
    return sorted(str(p.relative_to(root)) for p in odd)


def finished_job_problems(root: Path) -> list[str]:
    """For every finished job in the store: all four outputs when it succeeded, none when it failed, and its
    inputs removed."""
    from service.jobs.models import JobRecord

    problems = []
    for record_path in sorted((root / "jobs").glob(f"*/{JOB_FILE}")):
        folder = record_path.parent
        record = JobRecord.model_validate_json(record_path.read_bytes())
        if not record.state.terminal:
            problems.append(f"{record.id}: still {record.state}")
            continue
        outputs = sorted(p.name for p in (folder / OUTPUT_DIR).iterdir())
        want = ALL_OUTPUTS if record.state == "succeeded" else []
        if outputs != want:
            problems.append(f"{record.id} ({record.state}): outputs {outputs}")
        if (folder / INPUT_DIR).exists():
            problems.append(f"{record.id} ({record.state}): inputs not removed")
    return problems


def spool_leftovers(root: Path) -> list[str]:
    """Partial writes anywhere in a listener spool and batches not cleaned up after submission."""
    odd = [p for p in root.rglob("*") if p.name.endswith(".partial")]
    odd += list((root / "batches").iterdir())
    return sorted(str(p.relative_to(root)) for p in odd)
