"""``parotid-seg``: the command-line entry point.

Subcommands: ``segment`` (the pipeline, no server), ``evaluate`` (commissioning report on a folder of patients),
``models list|promote``, and the apps ``serve`` (HTTP API),
``worker`` (Celery worker) and ``listen`` (DICOM listener). Each app lives in its own module exposing
``configure(parser)`` and ``run(args) -> int``, imported only when its subcommand runs.

Exit status: 0 success; 2 rejected input, with one line ``error[CODE]: message`` on stderr and no output files.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from service.errors import ErrorCode, InputError, ServiceError

APPS = {
    "serve": ("service.api.app_cli", "run the HTTP API (embedded worker pool unless PAROTID_BROKER_URL is set)"),
    "worker": ("service.worker.app_cli", "run a Celery worker (one process; the model is loaded lazily once)"),
    "listen": ("service.listener.app_cli", "run the DICOM listener (C-STORE SCP, C-ECHO) and send results back"),
}


def _progress(stage: str, frac: float) -> None:
    print(f"[{frac * 100:5.1f}%] {stage}", file=sys.stderr, flush=True)


def _cmd_segment(args: argparse.Namespace) -> int:
    from service.pipeline.segment import segment_series

    for p in (args.output, args.qa, args.preview):
        if p is not None and not p.parent.is_dir():
            raise InputError(ErrorCode.EMPTY_INPUT, f"{p.parent}: output folder does not exist")
    qa = segment_series(
        [Path(p) for p in args.ct_dir],
        rtstruct_path=args.output,
        qa_path=args.qa,
        preview_path=args.preview,
        model=args.model,
        reference=args.reference,
        series_uid=args.series_uid,
        store=args.model_store,
        progress=None if args.quiet else _progress,
    )
    summary = ", ".join(f"{n} {g.volume_cc:.1f} cc" for n, g in qa.glands.items())
    print(f"QA status: {qa.status} ({summary})", file=sys.stderr)
    for r in qa.reasons:
        print(f"  {r.severity}: {r.message}", file=sys.stderr)
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    from service.model_bundle import DEFAULT_STORE

    parser = argparse.ArgumentParser(prog="parotid-seg", description="Parotid gland auto-contouring (research use)")
    parser.add_argument("--model-store", type=Path, default=DEFAULT_STORE, help="model store folder")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment one CT series and write an RTSTRUCT (+ QA JSON, preview PNG)")
    seg.add_argument("ct_dir", nargs="+", help="folder(s) searched recursively, or DICOM files")
    seg.add_argument("--output", type=Path, required=True, help="RTSTRUCT file to write")
    seg.add_argument("--qa", type=Path, help="QA JSON file to write")
    seg.add_argument("--preview", type=Path, help="preview PNG file to write")
    seg.add_argument("--model", help="NAME[:VERSION] of the bundle (default: the promoted one)")
    seg.add_argument("--reference", type=Path, help="reference RTSTRUCT: adds Dice/IoU/HD95/MSD to the QA")
    seg.add_argument("--series-uid", help="SeriesInstanceUID to use when the input holds several CT series")
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
