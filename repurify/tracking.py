"""MLflow tracking for stages: buffered during the stage, written once under a file lock.

Stages that run in parallel (``snakemake --cores 2``) share one SQLite file;
SQLite allows one writer at a time, so each stage holds an exclusive
``flock`` on ``<db>.lock`` while it writes its single batch.

Run tree: one pipeline run per invocation of ``dvc repro``/``snakemake`` (or per
stage run by hand), its stage runs under it, their per-row runs under those.
The tag ``repurify.kind`` says which level a run is: pipeline, stage or row.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repurify import passes
from repurify.params import Params

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

PIPELINE_ENV = "REPURIFY_PIPELINE_RUN"  # shared by all stages of one invocation (set by the Snakefile)
PIPELINE_TAG = "repurify.pipeline_run"  # the invocation key, on the pipeline run
KIND_TAG = "repurify.kind"  # pipeline | stage | row


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or ``sqlite:///<repo root>/mlflow.db`` (absolute)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def engine() -> str:
    """Which engine launched this stage: snakemake, dvc or cli."""
    if os.environ.get("REPURIFY_ENGINE"):
        return os.environ["REPURIFY_ENGINE"]
    return "dvc" if os.environ.get("DVC_STAGE") else "cli"


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's commit, ``<sha>-dirty`` when tracked files differ from it (dvc.lock aside, which the
    run itself rewrites), ``unknown`` outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True,
                              cwd=cwd).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings -> ``{"a.b.c": "value"}`` for MLflow params."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): str(obj)}


def _proc_stat(pid: int, proc: Path) -> tuple[int, str] | None:
    """(parent pid, start time in clock ticks after boot) from ``/proc/<pid>/stat``, or None."""
    try:  # the command name (field 2) is in parentheses and may contain spaces or ")"
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[19]  # fields 4 and 22
    except (OSError, IndexError, ValueError):
        return None


def _is_dvc(pid: int, proc: Path) -> bool:
    """Whether the process runs ``dvc ...``, ``python .../dvc ...`` or ``python -m dvc ...``."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return "dvc" in [Path(a).name for a in argv[:2]] or argv[1:3] == ["-m", "dvc"]


def _dvc_ancestor(pid: int, proc: Path) -> str | None:
    """``<pid>:<start time>`` of the nearest ``dvc`` process above ``pid``, or None."""
    stat = _proc_stat(pid, proc)
    while stat and stat[0] > 1:
        pid, stat = stat[0], _proc_stat(stat[0], proc)
        if stat and _is_dvc(pid, proc):
            return f"{pid}:{stat[1]}"
    return None


def pipeline_key(pid: int | None = None, proc: Path = Path("/proc")) -> str:
    """The pipeline invocation that process ``pid`` (default: this one) belongs to.

    ``$REPURIFY_PIPELINE_RUN`` if set; else the nearest ``dvc`` ancestor process,
    ``dvc:<host>:<pid>:<start time>``; else the process itself, ``cli:<host>:<pid>:<start time>``
    (without ``/proc`` every stage is its own pipeline run). Characters other than letters,
    digits and ``-_.:`` become ``_``.
    """
    key = os.environ.get(PIPELINE_ENV)
    if not key:
        host, pid = socket.gethostname(), pid or os.getpid()
        dvc, own = _dvc_ancestor(pid, proc), _proc_stat(pid, proc)
        key = f"dvc:{host}:{dvc}" if dvc else f"cli:{host}:{pid}:{own[1] if own else time.time_ns()}"
    return re.sub(r"[^\w\-.:]", "_", key)


def process_start_ms(proc: Path = Path("/proc")) -> int:
    """When this process started (ms since the epoch): a stage's wall time includes its imports and
    input loading. Now, where ``/proc`` is missing."""
    now = time.time()
    try:
        uptime = float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return int(now * 1000)
    stat = _proc_stat(os.getpid(), proc)
    age = 0.0 if stat is None else uptime - int(stat[1]) / os.sysconf("SC_CLK_TCK")
    return int((now - max(age, 0.0)) * 1000)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports kB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def _db_lock(uri: str) -> Iterator[None]:
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class StageRun:
    """Metrics, params and tags of one stage execution, flushed to MLflow at the end."""

    stage: str
    params: Params
    tags: dict[str, str] = field(default_factory=dict)
    extra_params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    children: list[tuple[str, dict[str, str], dict[str, float]]] = field(default_factory=list)
    started: int = field(default_factory=lambda: process_start_ms())

    @property
    def label(self) -> str:
        """The stage and, for a per-defense stage, its slot: ``evaluate_hgd``."""
        return "_".join([self.stage, *([self.tags["defense"]] if "defense" in self.tags else [])])

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        """Record a metric; characters MLflow refuses in names (``{``, ``,``...) become ``_``."""
        key = re.sub(r"[^\w\-. :/]", "_", key)
        self.metrics.append((key, float(value), int(time.time() * 1000), step))

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        for k, v in values.items():
            self.log_metric(k, v, step)

    def log_child(self, name: str, tags: dict[str, Any], metrics: dict[str, float]) -> None:
        """A nested run (e.g. one per attack x threat model) under this stage's run."""
        self.children.append((name, {k: str(v) for k, v in tags.items()}, metrics))

    def log_params(self, values: dict[str, Any]) -> None:
        self.extra_params.update(flatten(values))

    def resources(self) -> dict[str, float]:
        """Wall time since the process started and peak resident memory, so far."""
        return {"stage.seconds": time.time() - self.started / 1000, "stage.peak_rss_mib": peak_rss_mib()}

    def flush(self, status: str, used: dict[str, float] | None = None) -> str:
        """Write the run (with ``used``, else :meth:`resources` now) under its pipeline run, and
        that run's status; returns the stage run's id."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        self.log_metrics(used or self.resources())
        uri = tracking_uri()
        p = self.params
        all_params = {"profile": p.profile, "seed": str(p.seed), "device": p.device,
                      **flatten(p.active.model_dump(mode="json")), **self.extra_params}
        tags = {"profile": p.profile, "stage": self.stage, "engine": engine(),
                "git_commit": git_commit(), **self.tags}
        key = pipeline_key()
        with _db_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(p.mlflow.experiment)
            exp_id = exp.experiment_id if exp else client.create_experiment(p.mlflow.experiment)
            found = client.search_runs([exp_id], f"tags.`{PIPELINE_TAG}` = '{key}'", max_results=1)
            parent = found[0] if found else client.create_run(
                exp_id, start_time=self.started, run_name=f"pipeline:{p.profile}:{tags['engine']}",
                tags={"profile": p.profile, "engine": tags["engine"], "git_commit": tags["git_commit"],
                      PIPELINE_TAG: key, KIND_TAG: "pipeline"})
            run = client.create_run(exp_id, start_time=self.started, run_name=f"{self.label}:{p.profile}",
                                    tags={"mlflow.parentRunId": parent.info.run_id})
            run_id = run.info.run_id
            client.log_batch(
                run_id,
                metrics=[Metric(k, v, ts, s) for k, v, ts, s in self.metrics],
                params=[Param(k, v[:6000]) for k, v in sorted(all_params.items())],
                tags=[RunTag(k, v) for k, v in sorted({**tags, KIND_TAG: "stage"}.items())],
            )
            now = int(time.time() * 1000)
            for name, child_tags, values in self.children:
                child = client.create_run(exp_id, run_name=name,
                                          tags={**tags, **child_tags, KIND_TAG: "row",
                                                "mlflow.parentRunId": run_id})
                client.log_batch(child.info.run_id,
                                 metrics=[Metric(k, v, now, 0) for k, v in values.items()])
                client.set_terminated(child.info.run_id, status)
            client.set_terminated(run_id, status)
            failed = "FAILED" in (status, parent.info.status)  # a failed stage marks the pipeline for good
            client.set_terminated(parent.info.run_id, "FAILED" if failed else "FINISHED")
        return run_id


@contextlib.contextmanager
def stage_run(stage: str, params: Params, **tags: str) -> Iterator[StageRun]:
    """Collect a stage's MLflow record; it is written even when the stage fails."""
    run = StageRun(stage, params, dict(tags))
    try:
        yield run
    except BaseException:
        try:
            run.flush("FAILED")
        except Exception as exc:  # never hide the stage's own error behind a tracking error
            print(f"warning: could not record the failed run in MLflow: {exc}", file=sys.stderr)
        raise
    used, bound = run.resources(), ""
    if (counted := passes.active()) is not None:  # REPURIFY_PASSES=1: time the bound, after the stage
        found = passes.metrics(counted)
        run.log_metrics(found)
        bound = f", compute bound {found['stage.bound_seconds']:.1f} s"
    run.flush("FINISHED", used)
    print(f"{run.label}: {used['stage.seconds']:.1f} s{bound}, peak resident memory "
          f"{used['stage.peak_rss_mib']:.0f} MiB", file=sys.stderr)
