"""``parotid-seg segment --batch OUT_DIR INPUT...``: segment every CT series found under the inputs.

The inputs (folders searched recursively, or files) are scanned once, file by file (an unreadable file is
reported and skipped, it does not stop the batch), and the CT files grouped by (0020,000E) Series Instance UID.
Each series is segmented on its own files by the same pipeline as a single ``segment`` run and gets its own
folder ``OUT_DIR/series_NNN/`` (numbered in the order of the series' first file path) with ``rtstruct.dcm``,
``qa.json`` and ``preview.png``, and with ``extras`` (``--batch-outputs``) ``seg.dcm``, ``masks_<gland>.nii.gz``
and/or ``uncertainty.nii.gz``, all from the same masks (``service.exports.write_with_research_outputs``).
``OUT_DIR/summary.csv`` lists every series (folder, Series Instance UID, the folder its files are in, status, QA
status, gland volumes, the error of a failed one) and every unreadable file.

Exit status: 0 when every series was segmented; 3 when some failed (the others' outputs are written; see
summary.csv); 2 when no CT series was found or none could be segmented.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from service.errors import ErrorCode, InputError, ServiceError
from service.fileio import default_file_mode, write_atomic
from service.pipeline.series_scan import list_input_files, scan_inputs
from service.pipeline.structures import StructureTemplate

EXIT_SOME_FAILED = 3
EXTRA_OUTPUTS = ("seg", "nifti", "uncertainty")
FIELDS = ("folder", "series_instance_uid", "input_folder", "n_files", "status", "qa_status", "Parotid_L_cc",
          "Parotid_R_cc", "error")  # fmt: skip


def find_series(inputs: Sequence[Path]) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """CT files grouped by Series Instance UID (series in the order of their first path), and unreadable files."""
    series: dict[str, list[Path]] = {}
    unreadable: dict[str, str] = {}
    for path in sorted(list_input_files(list(inputs))):
        try:
            scan = scan_inputs(path)
        except ServiceError as exc:
            unreadable[str(path)] = exc.one_line()
            continue
        for uid, files in scan.ct_series.items():
            series.setdefault(uid, []).extend(f.path for f in files)
    return series, unreadable


def _progress_line(i: int, n: int, name: str, text: str) -> None:
    print(f"[{i}/{n}] {name}: {text}", file=sys.stderr, flush=True)


def segment_batch(
    inputs: Sequence[Path],
    out_dir: Path,
    *,
    model: str | None,
    store: Path,
    progress: Callable[[int, int, str, str], None] | None = _progress_line,
    structures: StructureTemplate | None = None,
    extras: Sequence[str] = (),
) -> int:
    """Segment every series; write the outputs and summary.csv; return the exit status (see the module doc)."""
    from service.exports import write_with_research_outputs
    from service.model_bundle import resolve_bundle
    from service.pipeline.segment import run_segmentation

    resolve_bundle(model, store)  # MODEL_NOT_FOUND before any work
    series, unreadable = find_series(inputs)
    if not series:
        raise InputError(ErrorCode.NO_CT_SERIES, f"no CT series under {', '.join(map(str, inputs))}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(ErrorCode.BAD_OUTPUT_DIR, f"{out_dir}: cannot be created ({exc.strerror})") from None
    rows: list[dict[str, object]] = []
    for i, (uid, files) in enumerate(series.items(), 1):
        name = f"series_{i:03d}"
        row: dict[str, object] = {"folder": name, "series_instance_uid": uid, "n_files": len(files),
                                  "input_folder": os.path.commonpath([str(f.parent) for f in files])}  # fmt: skip
        folder = out_dir / name
        try:
            folder.mkdir(exist_ok=True)
            qa = write_with_research_outputs(
                run_segmentation(files, model=model, store=store),
                folder / "rtstruct.dcm",
                qa_path=folder / "qa.json",
                preview_path=folder / "preview.png",
                uncertainty_path=folder / "uncertainty.nii.gz" if "uncertainty" in extras else None,
                seg_path=folder / "seg.dcm" if "seg" in extras else None,
                nifti_prefix=folder / "masks" if "nifti" in extras else None,
                structures=structures,
            )
            row.update(status="ok", qa_status=qa.status)
            row.update({f"{g}_cc": f"{q.volume_cc:.2f}" for g, q in qa.glands.items()})
            text = f"QA {qa.status} (" + ", ".join(f"{g} {q.volume_cc:.1f} cc" for g, q in qa.glands.items()) + ")"
        except ServiceError as exc:
            row.update(status="failed", error=exc.one_line())
            text = f"FAILED {exc.one_line()}"
        except Exception as exc:  # one series' bug must not stop the batch; it is reported
            row.update(status="failed", error=f"error[INTERNAL_ERROR]: {type(exc).__name__}: {exc}")
            text = f"FAILED {row['error']}"
        if row["status"] != "ok" and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a failed series leaves no output behind
        rows.append(row)
        if progress:
            progress(i, len(series), name, text)
    for path, message in unreadable.items():
        rows.append({"folder": "", "input_folder": path, "status": "unreadable", "error": message})
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=FIELDS, restval="")
    w.writeheader()
    w.writerows(rows)
    write_atomic(out_dir / "summary.csv", buf.getvalue().encode(), mode=default_file_mode())
    ok = sum(1 for r in rows if r["status"] == "ok")
    failed = sum(1 for r in rows if r["status"] == "failed")
    print(f"{ok} of {len(series)} series segmented, {failed} failed, {len(unreadable)} unreadable files; "
          f"summary: {out_dir / 'summary.csv'}", file=sys.stderr)  # fmt: skip
    if ok == 0:
        return 2
    return EXIT_SOME_FAILED if failed or unreadable else 0
