"""Run a profile's stage table without DVC or Snakemake, for a machine that has neither (the GPU
run, ``benchmarks/device.sh``): each stage in its own process, in dependency order, ``--jobs`` at
a time, with its wall time and exit code written to ``<out>/schedule.json`` as it ends.

It is a measuring tool, not a third engine: nothing is cached or skipped for being up to date.
Where MLflow is not installed, a stage's record goes to ``<out>/records/<stage>.json`` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _stage_process(records: Path, module: str, argv: list[str]) -> None:
    """Run ``python -m <module> argv`` in this process, its MLflow record to ``records`` if
    MLflow is missing."""
    import stages  # noqa: F401  (first: the stages' thread and SIMD pins, before torch loads)
    from repurify import tracking
    from repurify.io import write_json

    try:
        import mlflow  # noqa: F401
    except ImportError:
        def flush(run: tracking.StageRun, status: str, used: dict[str, float] | None = None) -> str:
            run.log_metrics(used or run.resources())
            write_json(records / f"{run.label}.json",
                       {"stage": run.stage, "tags": run.tags, "status": status, "rows": len(run.children),
                        "metrics": {k: v for k, v, _, _ in run.metrics}})
            return run.label

        tracking.StageRun.flush = flush
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _produced(st: Any, profile: str) -> set[str]:
    return {t.replace("{profile}", profile)
            for t in (*st.outs, *st.metrics, *st.uncached, *st.out_dirs)}


def schedule(profile: str, device: str, out: Path, *, jobs: int, budget_s: float,
             skip: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the table (less ``skip``, or just ``only``); stop launching after ``budget_s`` and end
    what still runs at 1.05 x ``budget_s``. A stage whose producer failed is not run."""
    from workflow.dag import active_profile, stages

    _, prof = active_profile(profile)
    table = [st for st in stages(prof) if st.name not in skip and (not only or st.name in only)]
    producer = {p: st.name for st in table for p in _produced(st, profile)}
    needs = {st.name: {producer[d] for d in (t.replace("{profile}", profile) for t in st.deps)
                       if d in producer} for st in table}
    (out / "records").mkdir(parents=True, exist_ok=True)
    status: dict[str, Any] = {}
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    pending = list(table)
    start = time.perf_counter()

    def save() -> None:
        (out / "schedule.json").write_text(json.dumps(
            {"profile": profile, "device": device, "jobs": jobs, "budget_s": budget_s,
             "elapsed_s": round(time.perf_counter() - start, 1), "stages": status}, indent=1))

    while pending or running:
        now = time.perf_counter() - start
        for name, (proc, began) in list(running.items()):
            if proc.poll() is not None or now > 1.05 * budget_s:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                rc = proc.returncode
                status[name] = {"rc": rc, "seconds": round(time.perf_counter() - start - began, 1),
                                "started_s": round(began, 1)}
                print(f"[{now:7.1f} s] {name}: rc {rc}, {status[name]['seconds']} s", flush=True)
                del running[name]
                save()
        for st in list(pending):
            blocked = [n for n in needs[st.name] if status.get(n, {}).get("rc", 0) != 0]
            if blocked or now > budget_s:
                pending.remove(st)
                status[st.name] = {"rc": None, "not_run": f"needs {blocked}" if blocked else "budget spent"}
                save()
            elif len(running) < jobs and all(status.get(n, {}).get("rc") == 0 for n in needs[st.name]):
                pending.remove(st)
                argv = [sys.executable, "-m", "benchmarks.schedule", "--one", str(out / "records"),
                        f"stages.{st.module or st.name}", "--profile", profile, *st.args,
                        "--device", device, "--log", st.log(profile)]
                running[st.name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL, env=os.environ), now)
                print(f"[{now:7.1f} s] start {st.name}", flush=True)
        time.sleep(0.5)
    save()
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        _stage_process(Path(argv[1]), argv[2], argv[3:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.schedule", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--jobs", type=int, default=1, help="stages at a time")
    ap.add_argument("--budget-s", type=float, default=float("inf"),
                    help="launch nothing after this many seconds; end what runs at 1.05x")
    ap.add_argument("--skip", nargs="*", default=[], help="stages not run (their outputs must exist)")
    ap.add_argument("--only", nargs="*", default=[], help="run just these stages")
    ap.add_argument("--out", required=True, help="folder for schedule.json and the records")
    ap.add_argument("--resume", action="store_true",
                    help="also skip the stages that ended with rc 0 in <out>/schedule.json")
    args = ap.parse_args(argv)
    out, skip = Path(args.out), list(args.skip)
    if args.resume and (out / "schedule.json").exists():
        done = json.loads((out / "schedule.json").read_text())["stages"]
        skip += [name for name, s in done.items() if s.get("rc") == 0]
        (out / "schedule.json").rename(out / f"schedule.{int(time.time())}.json")
    status = schedule(args.profile, args.device, out, jobs=args.jobs, budget_s=args.budget_s,
                      skip=tuple(skip), only=tuple(args.only))
    return 0 if all(s.get("rc") == 0 for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
