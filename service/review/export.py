"""Export corrected cases for retraining: CT + final masks as NIfTI in the layout ``training.data.nifti`` reads
(``make retrain FORMAT=nifti TRAIN_DIR=<out>``)::

    <out>/<job id>/image.nii.gz        CT in HU (int16), RAS voxel order, diagonal affine
    <out>/<job id>/Parotid_L.nii.gz    0/1 mask of the approved revision (one file per structure)
    <out>/<job id>/Parotid_R.nii.gz
    <out>/manifest.json                per case: revision, voxels added/removed per structure, reviewer, time

A case is exported when it was approved on a revision after the model's (a person corrected it); with
``include_unedited`` approved unedited results are exported too. Rejected and undecided cases never are. The job
id names the folder: no patient name or ID is written.

    parotid-seg review-export --out runs/corrected [--owner OWNER] [--include-unedited]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from service.fileio import write_atomic
from service.jobs.store import JobStore
from service.review.cache import CT_FILE
from service.review.nifti import nifti_bytes, read_nifti_zyx
from service.review.store import ReviewCase


def export_corrected(
    store: JobStore, out: Path, *, owner: str | None = None, include_unedited: bool = False
) -> list[dict]:
    """Write the cases (see the module docstring); returns the manifest entries."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for record in store.list_jobs():
        if owner is not None and record.owner != owner:
            continue
        case = ReviewCase(store.job_path(record.id), record.id)
        decision = case.decision() if case.available else None
        if decision is None or decision.decision != "approved":
            continue
        if decision.revision == 0 and not include_unedited:
            continue
        geometry = case.geometry()
        labels = read_nifti_zyx(case.masks_path(decision.revision))
        folder = out / record.id
        tmp = out / f".{record.id}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shutil.copyfile(case.dir / CT_FILE, tmp / "image.nii.gz")
        for g in geometry.glands:
            mask = (labels == g.label).astype(np.uint8)
            write_atomic(tmp / f"{g.name}.nii.gz", nifti_bytes(mask, geometry.spacing_mm_zyx, geometry.origin_lps))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        revisions = [r for r in case.revisions() if 0 < r.number <= decision.revision]
        added: dict[str, int] = {}
        removed: dict[str, int] = {}
        for r in revisions:
            for k, v in r.voxels_added.items():
                added[k] = added.get(k, 0) + v
            for k, v in r.voxels_removed.items():
                removed[k] = removed.get(k, 0) + v
        manifest.append(
            {
                "case": record.id,
                "model": record.model,
                "revision": decision.revision,
                "voxels_added": added,
                "voxels_removed": removed,
                "reviewer": decision.reviewer,
                "approved_at": decision.decided_at.isoformat(),
            }
        )
    write_atomic(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for the cases (created)")
    parser.add_argument("--owner", help="only this API key owner's jobs (e.g. dicom:SCANNER1)")
    parser.add_argument("--include-unedited", action="store_true", help="also approved results nobody corrected")


def run(args: argparse.Namespace) -> int:
    from service.config import Settings

    settings = Settings()
    store = JobStore(settings.job_dir)
    cases = export_corrected(store, args.out, owner=args.owner, include_unedited=args.include_unedited)
    print(f"exported {len(cases)} case(s) to {args.out} (make retrain FORMAT=nifti TRAIN_DIR={args.out})")
    return 0
