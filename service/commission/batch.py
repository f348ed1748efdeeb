"""``parotid-seg evaluate DATA_DIR --output REPORT_DIR``: commission a bundle on a folder of a clinic's patients.

Each sub-folder of DATA_DIR is one patient (``service.commission.patient``). Patients are processed one after the
other with a progress line each; one patient's failure is recorded (with its error code) and never stops the rest.
Resumable: each finished patient's result is kept in ``REPORT_DIR/patients/<patient>.json`` and reused when the
command runs again with the same bundle (failed patients are retried). The report (``report.html``, ``summary.json``,
``per_patient.csv``, ``overlays/*.png``) is rewritten from all kept results at the end. Nothing is written into the
model store: a REPORT_DIR inside it is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from service.errors import ErrorCode, InputError, ServiceError
from service.fileio import default_file_mode, write_atomic
from service.model_bundle import resolve_bundle

RESULT_VERSION = 1


def _atomic_write(path: Path, data: bytes) -> None:
    write_atomic(path, data, mode=default_file_mode())


def _check_output(output: Path, store: Path) -> None:
    out, st = output.resolve(), store.resolve()
    if out == st or st in out.parents:
        raise InputError(ErrorCode.BAD_OUTPUT_DIR, f"{output}: inside the model store {store}; choose another folder")
    try:
        (output / "patients").mkdir(parents=True, exist_ok=True)
        (output / "overlays").mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(ErrorCode.BAD_OUTPUT_DIR, f"{output}: cannot be created ({exc.strerror})") from None


def _one_patient(patient_dir: Path, output: Path, spec: str, store: Path, synonyms) -> dict:
    """Evaluate one patient, write its overlays and its result file; returns the result."""
    from service.commission.patient import evaluate_patient
    from service.commission.plots import overlay_png

    res = evaluate_patient(patient_dir, model=spec, store=store, synonyms=synonyms)
    overlays = []
    for gland, ref in res.reference.items():
        png, k = overlay_png(res.ct, res.auto[gland], ref, f"{patient_dir.name} {gland}")
        name = f"{patient_dir.name}_{gland}.png"
        _atomic_write(output / "overlays" / name, png)
        overlays.append({"file": name, "gland": gland, "slice": k})
    rows = [{**r, "qa_status": res.qa_status} for r in res.rows]
    result = {"version": RESULT_VERSION, "model": spec, "rows": rows, "overlays": overlays, "has_dose": res.has_dose}
    _atomic_write(output / "patients" / f"{patient_dir.name}.json", json.dumps(result).encode())
    (output / "patients" / f"{patient_dir.name}.failed.json").unlink(missing_ok=True)
    return result


def _kept(output: Path, patient: str, spec: str) -> dict | None:
    path = output / "patients" / f"{patient}.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = result.get("version") == RESULT_VERSION and result.get("model") == spec
    return result if ok and all((output / "overlays" / o["file"]).is_file() for o in result["overlays"]) else None


def _progress_line(i: int, n: int, patient: str, text: str) -> None:
    print(f"[{i}/{n}] {patient}: {text}", file=sys.stderr, flush=True)


def run_commissioning(
    data_dir: Path,
    output: Path,
    *,
    model: str | None,
    store: Path,
    tolerances: Path | None = None,
    synonyms: Mapping[str, Sequence[str]] | Path | None = None,
    progress: Callable[[int, int, str, str], None] | None = _progress_line,
) -> dict:
    """Evaluate every patient folder of ``data_dir`` and write the report into ``output``; returns the summary."""
    from service.commission.html import render, write_html
    from service.commission.plots import bland_altman_png
    from service.commission.report import build_summary, load_tolerances, write_csv, write_json
    from service.pipeline.rtstruct import _package_version
    from service.pipeline.rtstruct_find import SYNONYMS_FILE, load_synonyms
    from service.pipeline.rtstruct_read import DEFAULT_SYNONYMS

    data_dir, output = Path(data_dir), Path(output)
    tol = load_tolerances(tolerances)  # refuse a bad tolerance file before any work
    if isinstance(synonyms, Path):
        synonyms = load_synonyms(synonyms)
    elif synonyms is None:
        synonyms = load_synonyms(data_dir / SYNONYMS_FILE) if (data_dir / SYNONYMS_FILE).is_file() else DEFAULT_SYNONYMS
    if not data_dir.is_dir():
        raise InputError(ErrorCode.EMPTY_INPUT, f"{data_dir}: not a folder of patient folders")
    patients = sorted(p for p in data_dir.iterdir() if p.is_dir())
    if not patients:
        raise InputError(ErrorCode.EMPTY_INPUT, f"{data_dir}: no patient folders (expected {data_dir}/<patient>/)")
    spec = resolve_bundle(model, store).spec  # MODEL_NOT_FOUND before any work
    _check_output(output, store)
    rows: list[dict] = []
    overlays: list[tuple[str, bytes]] = []
    failed: dict[str, str] = {}
    for i, patient in enumerate(patients, 1):
        result = _kept(output, patient.name, spec)
        status = "kept from an earlier run"
        if result is None:
            try:
                result = _one_patient(patient, output, spec, store, synonyms)
                status = "done"
            except ServiceError as exc:
                failed[patient.name] = exc.one_line()
            except Exception as exc:  # one patient's bug must not stop the batch; it is reported
                failed[patient.name] = f"error[INTERNAL_ERROR]: {type(exc).__name__}: {exc}"
        if patient.name in failed:
            _atomic_write(
                output / "patients" / f"{patient.name}.failed.json", json.dumps(failed[patient.name]).encode()
            )
            if progress:
                progress(i, len(patients), patient.name, f"FAILED {failed[patient.name]}")
            continue
        assert result is not None
        rows += result["rows"]
        for o in result["overlays"]:
            overlays.append(
                (f"{patient.name} {o['gland']}, slice {o['slice']}", (output / "overlays" / o["file"]).read_bytes())
            )
        if progress:
            dice = ", ".join(f"{r['gland']} Dice {r['dice']:.3f}" for r in result["rows"])
            progress(i, len(patients), patient.name, f"{status} ({dice or 'no reference gland'})")
    meta = {
        "model": spec,
        "data_dir": str(data_dir),
        "generated_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "tool_version": _package_version(),
    }
    summary = build_summary(rows, failed, meta, tol)
    figures = {}
    for name, args in (("volume (cc)", ("pred_cc", "ref_cc", "gland volume", "cc")),
                       ("mean dose (Gy)", ("mean_dose_pred_gy", "mean_dose_ref_gy", "mean dose", "Gy"))):  # fmt: skip
        png = bland_altman_png(rows, *args)
        if png is not None:
            figures[f"Bland-Altman: {name}"] = png
    write_csv(rows, output / "per_patient.csv")
    write_json(summary, output / "summary.json")
    write_html(render(summary, rows, figures, overlays), output / "report.html")
    return summary
