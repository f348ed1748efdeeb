"""``make bench`` (``python -m bench.bench``): latency per path (CLI, embedded service, Celery service) with the
time per stage, peak worker memory, throughput with one and two Celery workers, API ingest rate, and series
reading against the disk-read floor. Writes ``<out>/bench[-quick].json`` and ``.md`` (the Markdown tables).

The model is the promoted bundle of ``--model-store`` (default: the repository's ``model_store/``). When that
store holds no bundle and no ``--model`` was named, an *untrained stand-in* with the shipped network's size
(residual U-Net, 8 base filters, depth 4) is built in the work folder and the output says so: its timings match
the real network's, its contours mean nothing.

``--quick`` uses a tiny input (128 x 128 pixels of 3 mm, 5 mm slices) and one repeat, for development; only the
full run gives the numbers to quote. Loopback only; the private Redis runs on a free port in the work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.data import CLINICAL, QUICK, QUICK_SIZES, SIZES, resampled_volume, write_series
from bench.report import markdown, summarize_runs, update_doc
from bench.runs import ModelChoice, measure_read, run_cli, run_probe, run_rejection, run_service, run_throughput

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "bench" / "results"
STANDIN = ("standin-residual-unet", "0.0.0-untrained")
PARTS = ("read", "reject", "cli", "embedded", "celery", "throughput", "sizes")
RUNTIMES = ("tensorflow", "openvino")


def choose_model(store: Path | None, spec: str | None, work: Path) -> ModelChoice:
    from service.errors import EnvironmentFault
    from service.model_bundle import DEFAULT_STORE, resolve_bundle

    explicit = store is not None or spec is not None
    store = (store or DEFAULT_STORE).resolve()
    try:
        ref = resolve_bundle(spec, store)
        return ModelChoice(store, ref.spec, True, f"bundle {ref.spec} from {store}")
    except EnvironmentFault as exc:
        if explicit:
            raise SystemExit(f"bench: {exc.message}") from None
    standin = work / "model_store"
    code = (
        "from pathlib import Path; from tests.bundle_factory import build_test_bundle; "
        f"build_test_bundle(Path({str(standin)!r}), name={STANDIN[0]!r}, version={STANDIN[1]!r}, "
        "base_filters=8, promote=True)"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    note = (
        f"no bundle in {store} yet: UNTRAINED stand-in with the shipped network's size (residual U-Net, "
        "8 base filters, depth 4); timings only, the contours mean nothing"
    )
    return ModelChoice(standin, f"{STANDIN[0]}:{STANDIN[1]}", False, note)


def machine_info() -> dict:
    def cpu_model() -> str:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
        return platform.processor() or "unknown CPU"

    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "load_before": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit.stdout.strip() or "unknown",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny input, 1 repeat, 2 throughput jobs (development)")
    p.add_argument("--repeats", type=int, help="warm runs per path (default 3; quick 1)")
    p.add_argument("--throughput-jobs", type=int, help="jobs per throughput measurement (default 4; quick 2)")
    p.add_argument("--model-store", type=Path, help="model store (default: the repository's model_store/)")
    p.add_argument("--model", help="NAME[:VERSION] (default: the promoted bundle)")
    p.add_argument("--patient", default="pt_201", help="OpenKBP sample patient (default pt_201)")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument(
        "--runtimes",
        default=",".join(RUNTIMES),
        help="network runtimes measured side by side on the CLI, embedded and size paths (PAROTID_RUNTIME values; "
        "Celery and throughput use the service default)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON and Markdown results")
    p.add_argument("--work", type=Path, help="work folder (default: a new temporary folder, removed at the end)")
    args = p.parse_args(argv)
    parts = [x for x in args.only.split(",") if x]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"--only: unknown part(s) {sorted(unknown)}")
    if ({"celery", "throughput"} & set(parts)) and shutil.which("redis-server") is None:
        p.error("redis-server not found (apt-get install redis-server), or leave out celery,throughput with --only")
    repeats = args.repeats or (1 if args.quick else 3)
    n_jobs = args.throughput_jobs or (2 if args.quick else 4)
    grid = QUICK if args.quick else CLINICAL
    work = args.work or Path(tempfile.mkdtemp(prefix="parotid-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    result: dict = {
        "schema_version": 1,
        "started_at": started.isoformat(),
        "quick": args.quick,
        "repeats": repeats,
        "machine": machine_info(),
    }

    def log(msg: str) -> None:
        print(f"[bench {time.monotonic() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    try:
        model = choose_model(args.model_store, args.model, work)
        result["model"] = {"spec": model.spec, "store": str(model.store), "real": model.real, "note": model.note}
        log(f"model: {model.note}")
        volume = resampled_volume(grid, args.patient)
        series = write_series(work / "series", grid, args.patient, volume)
        result["input"] = series.describe()
        log(f"input: {series.describe()}")
        if "read" in parts:
            result["read"] = measure_read(series, repeats=max(repeats, 3))
            log(f"read: {result['read']}")
        runtimes = [r for r in args.runtimes.split(",") if r]
        result["runtimes"] = runtimes
        if "reject" in parts:
            result["reject"] = run_rejection(work / "reject", model, repeats=max(repeats, 3))
            log(f"reject: {result['reject']}")
        for rt in runtimes if "cli" in parts else []:
            runs = [run_cli(series, model, work / f"cli-{rt}{n}", f"cli {rt} {n + 1}", rt) for n in range(repeats)]
            result[f"cli:{rt}"] = {
                "runs": runs,
                "summary": summarize_runs(runs),
                "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
            }
            log(f"cli {rt}: {result[f'cli:{rt}']['summary']['latency_s']}")
        for rt in runtimes if "embedded" in parts else []:
            res = run_service(
                series,
                model,
                work / f"embedded-{rt}",
                celery=False,
                repeats=repeats,
                zip_upload=rt == runtimes[0],
                runtime=rt,
            )
            res["summary"] = summarize_runs(res["runs"])
            result[f"embedded:{rt}"] = res
            log(f"embedded {rt}: {res['summary']['latency_s']}, cold {res['cold']['latency_s']} s")
        if "celery" in parts:
            res = run_service(series, model, work / "celery", celery=True, repeats=repeats, zip_upload=False)
            res["summary"] = summarize_runs(res["runs"])
            result["celery"] = res
            log(f"celery: {res['summary']['latency_s']}, cold {res['cold']['latency_s']} s")
        if "throughput" in parts:
            copies = [series] + [write_series(work / f"copy{n}", grid, args.patient, volume) for n in range(1, n_jobs)]
            result["throughput"] = run_throughput(copies, model, work / "throughput", [1, 2])
            log(f"throughput: {result['throughput']}")
        if "sizes" in parts:
            result["sizes"] = []
            for label, size_grid in (QUICK_SIZES if args.quick else SIZES).items():
                s_series = series if size_grid == grid else write_series(work / "size", size_grid, args.patient)
                for rt in runtimes:
                    probe = run_probe(s_series, model, rt, repeats)
                    result["sizes"].append({"grid": label, "input": s_series.describe(), **probe})
                    log(f"size {label} {rt}: {probe['latency_s']} s, {probe['peak_rss_bytes'] / 2**20:.0f} MiB")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result["finished_at"] = datetime.now(UTC).isoformat()
    result["duration_s"] = round(time.monotonic() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bench-quick" if args.quick else "bench"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / f"{stem}.md").write_text(table)
    print(table, end="")
    log(f"wrote {args.out / (stem + '.json')} and .md")
    full = not args.quick and args.out.resolve() == DEFAULT_OUT.resolve() and set(parts) == set(PARTS)
    if full and update_doc("bench", table):
        log("docs/benchmarks.md updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
