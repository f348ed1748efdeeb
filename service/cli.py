"""``parotid-seg``: the command-line entry point.

Subcommands: ``segment`` (the pipeline, no server), ``evaluate`` (commissioning report on a folder of patients),
``models list|promote``, and the apps ``serve`` (HTTP API),
``worker`` (Celery worker) and ``listen`` (DICOM listener). Each app lives in its own module exposing
``configure(parser)`` and ``run(args) -> int``, imported only when its subcommand runs.

Exit status: 0 success; 2 rejected input, with one line ``error[CODE]: message`` on stderr and no output files;
3 (``segment --fail-on-qa review|fail``) the outputs were written but the QA status is at least the one given.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from service.errors import ErrorCode, InputError, ServiceError

if TYPE_CHECKING:
    from service.pipeline.qa import QAReport

APPS = {
    "serve": ("service.api.app_cli", "run the HTTP API (embedded worker pool unless PAROTID_BROKER_URL is set)"),
    "worker": ("service.worker.app_cli", "run a Celery worker (one process; the model is loaded lazily once)"),
    "listen": ("service.listener.app_cli", "run the DICOM listener (C-STORE SCP, C-ECHO) and send results back"),
    "review-export": (
        "service.review.export",
        "export approved, corrected cases as NIfTI for make retrain FORMAT=nifti",
    ),
}


def _progress(stage: str, frac: float) -> None:
    print(f"[{frac * 100:5.1f}%] {stage}", file=sys.stderr, flush=True)


def _roi_suffix(value: str) -> str:
    from pydantic import ValidationError

    from service.pipeline.structures import StructureTemplate

    try:
        return StructureTemplate(suffix=value).suffix
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.errors()[0]["msg"]) from None


def _batch_outputs(value: str) -> tuple[str, ...]:
    from service.batch_segment import EXTRA_OUTPUTS

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in EXTRA_OUTPUTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown output(s) {', '.join(unknown)}; expected {', '.join(EXTRA_OUTPUTS)}")
    return names


def _cmd_segment(args: argparse.Namespace) -> int:
    from service.pipeline.segment import segment_series
    from service.pipeline.structures import StructureTemplate

    if args.batch is None and args.batch_outputs:
        message = "--batch-outputs is for --batch; one series takes --seg, --nifti, --uncertainty"
        raise InputError(ErrorCode.BAD_REQUEST, message)
    if args.batch is not None:
        from service.batch_segment import segment_batch

        for flag in ("qa", "preview", "reference", "series_uid", "seg", "nifti", "uncertainty"):
            if getattr(args, flag) is not None:
                hint = "; with --batch use --batch-outputs seg,nifti,uncertainty"
                raise InputError(ErrorCode.BAD_REQUEST, f"--{flag.replace('_', '-')} is for one series{hint}")
        return segment_batch(
            [Path(p) for p in args.ct_dir],
            args.batch,
            model=args.model,
            store=args.model_store,
            progress=None if args.quiet else _batch_progress,
            structures=StructureTemplate(suffix=args.roi_suffix),
            extras=args.batch_outputs,
        )

    for p in (args.output, args.qa, args.preview, args.seg, args.nifti, args.uncertainty):
        if p is not None and not p.parent.is_dir():
            raise InputError(ErrorCode.EMPTY_INPUT, f"{p.parent}: output folder does not exist")
    if args.seg is not None or args.nifti is not None:
        qa = _segment_with_research_outputs(args)
    else:
        qa = segment_series(
            [Path(p) for p in args.ct_dir],
            rtstruct_path=args.output,
            qa_path=args.qa,
            preview_path=args.preview,
            uncertainty_path=args.uncertainty,
            model=args.model,
            reference=args.reference,
            series_uid=args.series_uid,
            store=args.model_store,
            progress=None if args.quiet else _progress,
            structures=StructureTemplate(suffix=args.roi_suffix),
        )
    summary = ", ".join(f"{n} {g.volume_cc:.1f} cc" for n, g in qa.glands.items())
    print(f"QA status: {qa.status} ({summary})", file=sys.stderr)
    for r in qa.reasons:
        print(f"  {r.severity}: {r.message}", file=sys.stderr)
    for n, g in qa.glands.items():
        if g.quality is not None:
            print(
                f"  {n}: estimated Dice {g.quality.predicted_dice:.2f}, P(poor) {g.quality.p_poor:.2f} "
                f"(review at >= {g.quality.review_threshold:.2f})",
                file=sys.stderr,
            )
    rank = {"ok": 0, "review": 1, "fail": 2}
    if args.fail_on_qa and rank[qa.status] >= rank[args.fail_on_qa]:
        print(f"QA status {qa.status} meets --fail-on-qa {args.fail_on_qa}: exit 3", file=sys.stderr)
        return 3
    return 0


def _segment_with_research_outputs(args: argparse.Namespace) -> QAReport:
    """RTSTRUCT (+ QA, preview) and a DICOM SEG and/or NIfTI masks from the same masks; on any error none stays."""
    from service.exports import write_with_research_outputs
    from service.pipeline.segment import run_segmentation
    from service.pipeline.structures import StructureTemplate

    result = run_segmentation(
        [Path(p) for p in args.ct_dir],
        model=args.model,
        reference=args.reference,
        series_uid=args.series_uid,
        store=args.model_store,
        progress=None if args.quiet else _progress,
    )
    return write_with_research_outputs(
        result,
        args.output,
        qa_path=args.qa,
        preview_path=args.preview,
        uncertainty_path=args.uncertainty,
        seg_path=args.seg,
        nifti_prefix=args.nifti,
        structures=StructureTemplate(suffix=args.roi_suffix),
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from service.commission.batch import run_commissioning

    summary = run_commissioning(
        args.data_dir,
        args.output,
        model=args.model,
        store=args.model_store,
        tolerances=args.tolerances,
        synonyms=args.roi_synonyms,
        progress=None if args.quiet else _batch_progress,
    )
    v = summary["verdict"]
    print(
        f"{summary['n_patients']} patients evaluated, {len(summary['failed'])} failed; acceptance verdict: "
        f"{v['result'].upper()}; report: {args.output / 'report.html'}",
        file=sys.stderr,
    )
    for c in v["checks"]:
        if c["result"] != "pass":
            print(f"  {c['result']}: {c['criterion']} ({c['what']}: {c['value']} vs {c['limit']})", file=sys.stderr)
    return 0


def _batch_progress(i: int, n: int, name: str, text: str) -> None:
    print(f"[{i}/{n}] {name}: {text}", file=sys.stderr, flush=True)


def _cmd_models(args: argparse.Namespace) -> int:
    from service.model_bundle import list_bundles, promote, promoted_spec

    if args.models_cmd == "list":
        current = promoted_spec(args.model_store)
        for b in list_bundles(args.model_store):
            mark = "*" if b.spec == current else " "
            print(f"{mark} {b.spec}\t{b.path}")
        return 0
    ref = promote(args.spec, args.model_store)
    print(f"promoted {ref.spec}")
    return 0


def _nifti_path(value: str) -> Path:
    if not value.endswith(".nii.gz"):
        raise argparse.ArgumentTypeError(f"{value}: the uncertainty map is NIfTI; use a name ending .nii.gz")
    return Path(value)


def build_parser() -> argparse.ArgumentParser:
    from service.model_bundle import DEFAULT_STORE

    parser = argparse.ArgumentParser(prog="parotid-seg", description="Parotid gland auto-contouring (research use)")
    parser.add_argument("--model-store", type=Path, default=DEFAULT_STORE, help="model store folder")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser(
        "segment",
        help="segment one CT series and write an RTSTRUCT (+ QA JSON, preview PNG), or every series (--batch)",
    )
    seg.add_argument("ct_dir", nargs="+", help="folder(s) searched recursively, or DICOM files")
    out = seg.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", type=Path, help="RTSTRUCT file to write")
    out.add_argument(
        "--batch",
        type=Path,
        metavar="OUT_DIR",
        help="segment every CT series under the inputs: OUT_DIR/series_NNN/{rtstruct.dcm,qa.json,preview.png} and "
        "OUT_DIR/summary.csv; exit 0 all done, 3 some failed, 2 none",
    )
    seg.add_argument("--qa", type=Path, help="QA JSON file to write")
    seg.add_argument(
        "--batch-outputs",
        type=_batch_outputs,
        default=(),
        metavar="LIST",
        help="with --batch: also write, per series folder, any of seg (seg.dcm), nifti (masks_<gland>.nii.gz), "
        "uncertainty (uncertainty.nii.gz), comma-separated",
    )
    seg.add_argument("--seg", type=Path, help="also write the masks as a DICOM SEG (research pipelines)")
    seg.add_argument("--nifti", type=Path, metavar="PREFIX", help="also write PREFIX_<gland>.nii.gz masks")
    seg.add_argument("--preview", type=Path, help="preview PNG file to write")
    seg.add_argument("--uncertainty", type=_nifti_path, help="uncertainty map to write (NIfTI, name ending .nii.gz)")
    seg.add_argument(
        "--fail-on-qa",
        choices=["review", "fail"],
        help="exit 3 (outputs still written) when the QA status is at least this",
    )
    seg.add_argument("--model", help="NAME[:VERSION] of the bundle (default: the promoted one)")
    seg.add_argument("--reference", type=Path, help="reference RTSTRUCT: adds Dice/IoU/HD95/MSD to the QA")
    seg.add_argument("--series-uid", help="SeriesInstanceUID to use when the input holds several CT series")
    seg.add_argument(
        "--roi-suffix", default="", type=_roi_suffix, help="appended to every ROI name, e.g. _AI (default: none)"
    )
    seg.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    seg.set_defaults(func=_cmd_segment)

    ev = sub.add_parser(
        "evaluate",
        help="commission a bundle on a folder of patients (CT + reference RTSTRUCT [+ RTDOSE]): HTML/CSV/JSON report",
    )
    ev.add_argument("data_dir", type=Path, help="folder with one sub-folder per patient")
    ev.add_argument("--output", type=Path, required=True, help="report folder (created; reused to resume)")
    ev.add_argument("--model", help="NAME[:VERSION] of the bundle (default: the promoted one)")
    ev.add_argument("--tolerances", type=Path, help="JSON acceptance criteria (see docs/commissioning.md)")
    ev.add_argument("--roi-synonyms", type=Path, help='JSON {"Parotid_L": [...], "Parotid_R": [...]} ROI names')
    ev.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ev.set_defaults(func=_cmd_evaluate)

    models = sub.add_parser("models", help="list the model bundles or promote one to be the default")
    msub = models.add_subparsers(dest="models_cmd", required=True)
    msub.add_parser("list", help="list bundles; * marks the promoted one")
    pro = msub.add_parser("promote", help="serve NAME:VERSION by default")
    pro.add_argument("spec")
    models.set_defaults(func=_cmd_models)

    for name, (module, help_text) in APPS.items():
        app = sub.add_parser(name, help=help_text)
        app.set_defaults(app_module=module)
        try:
            importlib.import_module(module).configure(app)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "app_module"):
            return int(importlib.import_module(args.app_module).run(args))
        return int(args.func(args))
    except ServiceError as exc:  # the input, or the installation (model store)
        print(exc.one_line(), file=sys.stderr)
        return exc.spec.exit_status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
