"""``make chaos`` (``python -m bench.chaos``): inject faults into a running installation and check that no job is
lost, none runs to two outputs, and the system recovers by itself.

Scenarios (``--only`` picks some): worker_sigkill_repeated, worker_sigkill_every_start, worker_host_lost,
redis_restart, disk_watermark, listener_abort_mid_series, destination_down, listener_storescu_killed (DCMTK
storescu SIGKILLed mid-series), listener_idle_sockets (300 idle TCP connections). Each runs against real processes
(``parotid-seg serve``/``worker``/``listen``, a private ``redis-server`` on a free loopback port with appendonly,
DCMTK ``storescp`` as the planning system), is bounded in time, and cleans up after itself. The input is the
benchmark's sample patient on a small grid (128 x 128 pixels of 3 mm, 5 mm slices) so that a job takes seconds;
the model is chosen as for ``make bench`` (promoted bundle, else an untrained stand-in of the same size).

Writes ``<out>/chaos.json`` and ``chaos.md``; exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.bench import DEFAULT_OUT, choose_model, machine_info
from bench.chaos_common import Ctx, Scenario
from bench.chaos_edge import destination_down, disk_watermark, listener_abort
from bench.chaos_hostile import idle_sockets, storescu_killed
from bench.chaos_worker import poison_job, pool_child_sigkill, redis_restart, whole_worker_sigkill
from bench.data import QUICK, resampled_volume
from bench.report import update_doc

SCENARIOS = {
    "worker_sigkill_repeated": pool_child_sigkill,
    "worker_sigkill_every_start": poison_job,
    "worker_host_lost": whole_worker_sigkill,
    "redis_restart": redis_restart,
    "disk_watermark": disk_watermark,
    "listener_abort_mid_series": listener_abort,
    "destination_down": destination_down,
    "listener_storescu_killed": storescu_killed,
    "listener_idle_sockets": idle_sockets,
}


def markdown(result: dict) -> str:
    lines = [
        f"Chaos run {result['finished_at'][:16].replace('T', ' ')} UTC, {result['machine']['cpu']} "
        f"({result['machine']['cores']} cores), git {result['machine']['git_commit']}, model "
        f"`{result['model']['spec']}`{'' if result['model']['real'] else ' (untrained stand-in)'}: "
        f"{result['passed']} of {len(result['scenarios'])} scenarios passed, {result['duration_s']:.0f} s.",
        "",
        "| scenario | fault injected | checks passed | recovery | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in result["scenarios"]:
        ok = sum(c["ok"] for c in s["checks"])
        timing = ", ".join(f"{k.replace('_', ' ')} {v} s" for k, v in s["timings_s"].items()) or "-"
        verdict = "PASS" if s["passed"] else "**FAIL**"
        lines.append(f"| `{s['name']}` | {s['action']} | {ok} / {len(s['checks'])} | {timing} | {verdict} |")
    failed = [(s["name"], c) for s in result["scenarios"] for c in s["checks"] if not c["ok"]]
    errors = [(s["name"], s["error"]) for s in result["scenarios"] if s["error"]]
    if failed or errors:
        lines += ["", "Failures:", ""]
        lines += [f"- `{n}`: {c['check']}: {c['detail']}" for n, c in failed]
        lines += [f"- `{n}`: error: {e.splitlines()[-1] if e else ''}" for n, e in errors]
    return "\n".join(lines) + "\n"


def _over_budget(signum, frame) -> None:
    raise TimeoutError("the chaos run's time budget is spent (--max-minutes)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenario names")
    p.add_argument("--repeats", type=int, default=3, help="kills in worker_sigkill_repeated (default 3)")
    p.add_argument("--model-store", type=Path, help="model store (default: the repository's model_store/)")
    p.add_argument("--model", help="NAME[:VERSION] (default: the promoted bundle)")
    p.add_argument("--patient", default="pt_201")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--work", type=Path, help="work folder (default: a temporary folder, removed at the end)")
    p.add_argument("--max-minutes", type=float, default=20.0, help="time budget for the whole run (default 20)")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    for tool in ("redis-server", "storescp"):
        if shutil.which(tool) is None:
            p.error(f"{tool} not found: install redis-server and dcmtk (apt-get install redis-server dcmtk)")
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        p.error(f"--only: unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="parotid-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    result: dict = {"schema_version": 1, "started_at": datetime.now(UTC).isoformat(), "machine": machine_info()}
    scenarios: list[Scenario] = []
    try:
        model = choose_model(args.model_store, args.model, work)
        result["model"] = {"spec": model.spec, "store": str(model.store), "real": model.real, "note": model.note}
        ctx = Ctx(work, model, QUICK, resampled_volume(QUICK, args.patient), args.patient, args.repeats)
        budget_end = t0 + args.max_minutes * 60
        signal.signal(signal.SIGALRM, _over_budget)
        for name in names:
            left = budget_end - time.monotonic()
            if left < 30:
                scenarios.append(Scenario(name, error=f"not run: the {args.max_minutes:.0f} min budget is spent"))
                continue
            print(f"[chaos {time.monotonic() - t0:6.0f} s] {name} ...", file=sys.stderr, flush=True)
            t1 = time.monotonic()
            signal.alarm(int(left))
            try:
                sc = SCENARIOS[name](ctx)
            except Exception:  # a scenario that crashes (or runs out of time) fails; the others still run
                sc = Scenario(name, error=traceback.format_exc())
            finally:
                signal.alarm(0)
            sc.duration_s = round(time.monotonic() - t1, 1)
            scenarios.append(sc)
            verdict = "PASS" if sc.passed else "FAIL"
            print(
                f"[chaos {time.monotonic() - t0:6.0f} s] {name}: {verdict} "
                f"({sum(c['ok'] for c in sc.checks)}/{len(sc.checks)} checks) {sc.timings_s}",
                file=sys.stderr,
                flush=True,
            )
            for c in sc.checks:
                if not c["ok"]:
                    print(f"    FAILED: {c['check']}: {c['detail']}", file=sys.stderr)
            if sc.error:
                print(f"    ERROR: {sc.error}", file=sys.stderr)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result["scenarios"] = [
        {
            "name": s.name,
            "action": s.action,
            "passed": s.passed,
            "checks": s.checks,
            "timings_s": s.timings_s,
            "duration_s": s.duration_s,
            "error": s.error,
        }
        for s in scenarios
    ]
    result["passed"] = sum(s.passed for s in scenarios)
    result["finished_at"] = datetime.now(UTC).isoformat()
    result["duration_s"] = round(time.monotonic() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos.json").write_text(json.dumps(result, indent=2) + "\n")
    report = markdown(result)
    (args.out / "chaos.md").write_text(report)
    print(report, end="")
    if args.out.resolve() == DEFAULT_OUT.resolve() and names == list(SCENARIOS) and update_doc("chaos", report):
        print("docs/benchmarks.md updated", file=sys.stderr)
    return 0 if result["passed"] == len(scenarios) else 1


if __name__ == "__main__":
    raise SystemExit(main())
