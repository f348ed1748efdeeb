"""Summaries and the Markdown tables of a ``make bench`` result (``python -m bench.report RESULT.json``)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from service.fileio import default_file_mode, write_atomic
from service.pipeline.stages import TIMED_STAGES, Stage

STAGES = tuple(str(s) for s in TIMED_STAGES)


_COLUMNS = tuple(k for k in STAGES if k != Stage.READ_REFERENCE)  # the benchmark series come without a reference
_TITLES = {"load_model": "load model", "resample_back": "resample back", "rtstruct": "RTSTRUCT", "qa": "QA"}


def spread(values: list[float]) -> dict:
    """median, min, max and n of ``values`` (empty -> {})."""
    if not values:
        return {}
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def summarize_runs(runs: list[dict]) -> dict:
    stages = {s: spread([r["stages_s"][s] for r in runs if s in r.get("stages_s", {})]) for s in STAGES}
    stages = {k: v for k, v in stages.items() if v}
    latency = spread([r["latency_s"] for r in runs])
    out = {"latency_s": latency, "stages_s": stages}
    if runs and "post_s" in runs[0]:
        out["post_s"] = spread([r["post_s"] for r in runs])
        out["ingest_mb_s"] = spread([r["ingest_mb_s"] for r in runs])
    if stages.get("model") and latency:
        stage_sum = sum(v["median"] for v in stages.values())
        out["model_over_latency"] = round(stages["model"]["median"] / latency["median"], 3)
        out["model_over_stage_sum"] = round(stages["model"]["median"] / stage_sum, 3)
        out["outside_stages_s"] = round(latency["median"] - stage_sum, 3)  # QA, records, queue, imports (CLI)
    return out


def _fmt(s: dict, unit: str = "") -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return f"{s['median']:.2f}{unit}"
    return f"{s['median']:.2f}{unit} ({s['min']:.2f}-{s['max']:.2f})"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def markdown(result: dict) -> str:
    m, inp, model = result["machine"], result["input"], result["model"]
    lines = [
        f"Measured {result['finished_at'][:16].replace('T', ' ')} UTC on {m['cpu']} ({m['cores']} cores), "
        f"{m['memory_gib']} GiB RAM, load average {m['load_before']} before the run; git {m['git_commit']}; "
        f"{'QUICK mode (tiny input, 1 repeat: for development only)' if result['quick'] else 'full run'}.",
        f"Input: {inp['patient']} resampled to {inp['slices']} x {inp['rows']} x {inp['columns']} at "
        f"{inp['spacing_mm_zyx'][0]} x {inp['spacing_mm_zyx'][1]} x {inp['spacing_mm_zyx'][2]} mm, {inp['files']} "
        f"files, {inp['bytes'] / 1e6:.1f} MB. Model: `{model['spec']}`"
        + ("" if model["real"] else f" ({model['note']})")
        + ".",
        "",
        "| path | runs | latency s, median (min-max) | "
        + " | ".join(_TITLES.get(k, k.replace("_", " ")) for k in _COLUMNS)
        + " | other | model / latency | peak RSS of the worker |",
        "|" + " --- |" * (len(_COLUMNS) + 6),
    ]
    paths = [(k, t) for k, t in (("cli", "CLI `parotid-seg segment` (new process)"), ("embedded", "embedded service"))]
    rows = [(f"{k}:{rt}", f"{t}, {rt}") for k, t in paths for rt in result.get("runtimes", [])]
    rows += [("cli", paths[0][1]), ("embedded", paths[1][1]), ("celery", "Celery service (1 worker, default runtime)")]
    for key, title in rows:
        if key not in result:
            continue
        s = result[key]["summary"]
        st = s["stages_s"]
        cells = [_fmt(st.get(k, {})) for k in _COLUMNS]
        lines.append(
            f"| {title} | {s['latency_s']['n']} | {_fmt(s['latency_s'])} | "
            + " | ".join(cells)
            + f" | {s.get('outside_stages_s', 0):.2f} | {s.get('model_over_latency', 0):.0%} | "
            f"{_mib(result[key]['peak_rss_bytes'])} |"
        )
    for key in [k for k in result if k.startswith("embedded")] + ["celery"]:
        if key in result:
            cold = result[key]["cold"]
            lines.append(
                f"| {key}: first job (model load {cold['stages_s'].get(Stage.LOAD_MODEL, 0):.1f} s) | 1 | "
                f"{cold['latency_s']:.2f} | " + " | ".join("" for _ in range(len(_COLUMNS) + 3)) + " |"
            )
    lines += [
        "",
        "Latency: CLI = process start to exit (imports and model load included); service = `POST` "
        "answered (every byte received, headers checked, job queued) to the job seen `succeeded` (polled "
        "every 0.1 s), warm worker. *other* = latency minus the timed stages (CLI: start-up and imports; "
        "service: QA report, job records, queue hand-off).",
    ]
    if "reject" in result:
        r = result["reject"]
        lines += [
            "",
            f"Rejected input (CLI, a 4-slice series, exit status 2 before any model load): {r['latency_s']:.2f} s "
            f"(median of {r['runs']}), `{r['error']}`.",
        ]
    if result.get("sizes"):
        lines += [
            "",
            "| input (pt_201 resampled) | grid z x y x x | MB | runtime | latency s | model s | everything else s "
            "| model / latency | peak RSS |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for z in result["sizes"]:
            i = z["input"]
            model_s = z.get("model_s") or 0.0
            lines.append(
                f"| {z['grid']} | {i['slices']} x {i['rows']} x {i['columns']} | {i['bytes'] / 1e6:.0f} | "
                f"{z['runtime']} | {z['latency_s']:.2f} | {model_s:.2f} | {z['not_model_s']:.2f} | "
                f"{model_s / z['latency_s']:.0%} | {_mib(z['peak_rss_bytes'])} |"
            )
        lines += [
            "",
            "Size sweep: `bench.probe`, one fresh process per row (model loaded, one cold run, then the median of "
            "the warm runs of the whole pipeline with RTSTRUCT, QA and preview written; no HTTP); peak RSS = the "
            "process' VmHWM.",
        ]
    if "throughput" in result:
        lines += ["", "| Celery workers | jobs | wall s | jobs / minute |", "| --- | --- | --- | --- |"]
        for t in result["throughput"]:
            lines.append(f"| {t['workers']} | {t['jobs']} | {t['wall_s']:.1f} | {t['jobs_per_min']:.2f} |")
    ingest = []
    for key in [k for k in result if k.startswith("embedded")] + ["celery"]:
        if key in result and result[key]["summary"].get("post_s"):
            s = result[key]["summary"]
            ingest.append(
                f"| {key}, {inp['files']} file parts | {inp['bytes'] / 1e6:.1f} | {_fmt(s['post_s'])} | "
                f"{_fmt(s['ingest_mb_s'])} |"
            )
        if key in result and "zip_upload" in result[key]:
            z = result[key]["zip_upload"]
            ingest.append(
                f"| {key}, one zip (stored) | {z['bytes'] / 1e6:.1f} | {z['post_s']:.2f} | {z['ingest_mb_s']:.1f} |"
            )
    if ingest:
        lines += [
            "",
            "| upload (`POST /v1/jobs`, loopback) | MB | s | MB/s |",
            "| --- | --- | --- | --- |",
            *ingest,
            "",
            "The `POST` time includes streaming to disk, zip extraction, the header checks of every file "
            "and the pixel-data hash (idempotency key).",
        ]
    if "read" in result:
        r = result["read"]
        lines += [
            "",
            f"Series reading: `load_series` {r['load_series_s']:.2f} s ({r['load_series_mb_s']:.0f} MB/s) "
            f"against {r['plain_read_s']:.3f} s ({r['plain_read_mb_s']:.0f} MB/s) to read the same bytes "
            f"(page cache warm): {r['ratio']:.0f} x the floor.",
        ]
    return "\n".join(lines) + "\n"


DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def update_doc(section: str, content: str, doc: Path = DOC) -> bool:
    """Replace the text between ``<!-- {section}:begin -->`` and ``<!-- {section}:end -->`` in ``doc`` (written
    atomically); False when the file or the markers are missing."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    try:
        text = doc.read_text()
    except FileNotFoundError:
        return False
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    write_atomic(doc, f"{head}{begin}\n{content}{end}{tail}".encode(), mode=default_file_mode())
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("result", type=Path)
    parser.add_argument("--update-doc", action="store_true", help=f"also write the tables into {DOC}")
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text())
    table = markdown(result)
    print(table, end="")
    if args.update_doc and not update_doc("bench", table):
        print(f"no bench markers in {DOC}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
