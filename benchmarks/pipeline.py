"""The pipeline on one profile.

:func:`pipeline` runs it in a scratch clone of the repository's HEAD (uncommitted changes are
not measured) with its own MLflow store: every stage from scratch, one ``dvc repro -s <stage>``
at a time in the stage table's order (wall time and peak resident memory of its process tree),
a repeated ``dvc repro`` with nothing changed, and the stages ``dvc repro`` reruns after one
defense param changes.

:func:`recorded` takes the per-stage figures from what the stages of this checkout recorded in
MLflow (``stage.seconds``, ``stage.peak_rss_mib``: each stage's latest finished run), and times
the no-op and the one-param rerun in a copy of the working tree with its outputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from workflow.dag import active_profile, stages

ROOT = Path(__file__).resolve().parent.parent
# runs a command, then prints its wall time and the peak RSS (kB) of its process tree
_MEASURE = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
            "rc = subprocess.run(sys.argv[1:], stdout=sys.stderr).returncode; "
            "print(json.dumps({'seconds': time.perf_counter() - t, 'rc': rc, "
            "'peak_rss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


def measure(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Wall time and peak resident memory of ``cmd`` and its descendants; its output, on failure."""
    res = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], cwd=cwd, env=env, capture_output=True,
                         text=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if out["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {out['rc']}):\n{res.stderr[-3000:]}")
    return {"seconds": out["seconds"], "peak_rss_mib": out["peak_rss_kb"] / 1024, "log": res.stderr}


def ran(log: str) -> list[str]:
    """The stages a ``dvc repro`` log says it ran."""
    return re.findall(r"Running stage '([^']+)'", log)


def dry_run_jobs(log: str) -> int:
    """The jobs a ``snakemake -n`` log lists (0: nothing to be done)."""
    found = re.search(r"^total\s+(\d+)", log, re.MULTILINE)
    return int(found.group(1)) if found else 0


def set_param(params: Path, key: str, value: Any) -> Any:
    """Set a dotted key of params.yaml (comments are lost: scratch copies only); returns the old value."""
    raw = yaml.safe_load(params.read_text())
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    old, node[leaf] = node[leaf], value
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    return old


def _env(repo: Path) -> dict[str, str]:
    """The environment of the timed commands: this interpreter's tools, the copy's own MLflow store."""
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _bounds(stages: dict[str, dict[str, float]], records: dict[str, dict[str, float]]) -> None:
    """Add each stage's recorded compute bound (``REPURIFY_PASSES=1`` runs) to its figures."""
    for name, fig in stages.items():
        if (bound := records.get(name, {}).get("bound_seconds")) is not None:
            fig["bound_seconds"] = bound


def pipeline(profile: str, change: tuple[str, Any], workdir: Path | None = None) -> dict[str, Any]:
    """Stage-by-stage cost from scratch, the no-op repro and the reruns after ``change`` (key
    relative to ``profiles.<profile>``, new value)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        set_param(repo / "params.yaml", "profile", profile)
        env = _env(repo)
        stages = {}
        # timed from outside: with REPURIFY_PASSES=1 exported, these times include the bound's timing
        for st in STAGES:
            m = measure(["dvc", "repro", "-s", st.name], repo, env)
            stages[st.name] = {"seconds": m["seconds"], "peak_rss_mib": m["peak_rss_mib"]}
            print(f"pipeline: {st.name}: {m['seconds']:.1f} s, peak {m['peak_rss_mib']:.0f} MiB",
                  file=sys.stderr)
        _bounds(stages, stage_records(profile, env["MLFLOW_TRACKING_URI"]))
        return {"source": "a scratch clone of HEAD, stage by stage",
                **_reruns(repo, env, profile, stages, change)}


STAGES = stages(active_profile()[1])  # the stages of the profile params.yaml names


def stage_name(tags: dict[str, str]) -> str:
    """The stage table's name of a recorded stage run (``evaluate`` + ``hgd`` -> ``evaluate_hgd``)."""
    per_defense = tags["stage"] in {st.module for st in STAGES if st.module}
    return f"{tags['stage']}_{tags['defense']}" if per_defense else tags["stage"]


def stage_records(profile: str, uri: str | None = None) -> dict[str, dict[str, float]]:
    """Each stage's latest finished run of ``profile`` in the MLflow store ``uri`` (default: this
    checkout's): its seconds, peak memory and, where it counted its passes, its compute bound."""
    from mlflow.tracking import MlflowClient

    from repurify.tracking import KIND_TAG, tracking_uri

    client = MlflowClient(tracking_uri=uri or tracking_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.`{KIND_TAG}` = 'stage' and tags.profile = '{profile}' and "
                              "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
    found: dict[str, dict[str, float]] = {}
    for r in runs:
        m = r.data.metrics
        if "stage.seconds" in m:
            found.setdefault(stage_name(r.data.tags), {
                "seconds": m["stage.seconds"], "peak_rss_mib": m["stage.peak_rss_mib"],
                **({"bound_seconds": m["stage.bound_seconds"]} if "stage.bound_seconds" in m else {})})
    return found


def recorded(profile: str, change: tuple[str, Any], workdir: Path | None = None) -> dict[str, Any]:
    """:func:`pipeline`'s figures from the stages' own records and a copy of this working tree."""
    active = yaml.safe_load((ROOT / "params.yaml").read_text())["profile"]
    if active != profile:
        raise RuntimeError(f"params.yaml runs profile {active!r}, not {profile!r}: its outputs are "
                           f"the ones timed; set `profile: {profile}` and run `dvc repro` first")
    stages = stage_records(profile)
    if not stages:
        raise RuntimeError(f"no finished stage run recorded for profile {profile}: run `dvc repro` first")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(ROOT, repo, symlinks=True, ignore=shutil.ignore_patterns(".venv", "mlflow.db*"))
        env = _env(repo)
        return {"source": "the stages' MLflow records", **_reruns(repo, env, profile, stages, change),
                # stages DVC found up to date in this checkout never ran here: no time to sum
                "unrecorded": [st.name for st in STAGES if st.name not in stages]}


def groups(stages: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The stages' wall time summed per kind (``evaluate_*`` -> ``evaluate``), largest first."""
    kinds: dict[str, list[str]] = {}
    for st in STAGES:
        if st.name in stages:
            kinds.setdefault(st.module or st.name, []).append(st.name)
    total = sum(s["seconds"] for s in stages.values())
    rows = [{"kind": kind, "stages": len(names), "seconds": sum(stages[n]["seconds"] for n in names),
             # the kind's compute bound, where every one of its stages timed one
             **({"bound_seconds": sum(stages[n]["bound_seconds"] for n in names)}
                if all("bound_seconds" in stages[n] for n in names) else {})}
            for kind, names in kinds.items()]
    return sorted(({**r, "share": r["seconds"] / total} for r in rows), key=lambda r: -r["seconds"])


def _reruns(repo: Path, env: dict[str, str], profile: str, stages: dict[str, dict[str, float]],
            change: tuple[str, Any]) -> dict[str, Any]:
    """The figures shared by both sources: per-stage cost, no-op repro, one-param rerun."""
    # the first no-op in a copied tree rehashes every output (DVC's state is keyed by inode)
    first = measure(["dvc", "repro"], repo, env)
    noop = measure(["dvc", "repro"], repo, env)
    dry = measure(["snakemake", "-n", "--cores", "1", "--config", f"profile={profile}"], repo, env)
    key, value = change
    old = set_param(repo / "params.yaml", f"profiles.{profile}.{key}", value)
    changed = measure(["dvc", "repro"], repo, env)
    return {"stages": stages, "groups": groups(stages),
            "seconds_from_scratch": sum(s["seconds"] for s in stages.values()),
            "goal_seconds_from_scratch": 30 * 60,
            "seconds_snakemake_dry_run": dry["seconds"], "goal_seconds_snakemake_dry_run": 5.0,
            "snakemake_dry_run_jobs": dry_run_jobs(dry["log"]),
            "peak_rss_mib_max": max(s["peak_rss_mib"] for s in stages.values()),
            "goal_peak_rss_mib": 4096, "seconds_noop": noop["seconds"], "goal_seconds_noop": 2.0,
            "seconds_noop_first": first["seconds"], "noop_reran": ran(first["log"]) + ran(noop["log"]),
            "change": {"key": key, "from": old, "to": value, "reran": ran(changed["log"]),
                       "seconds": changed["seconds"]}}


def install(lock: Path, workdir: Path | None = None) -> dict[str, Any]:
    """Wall time of a fresh virtual environment from the lock file (what ``make install`` does)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        venv = Path(tmp) / "venv"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(lock)], check=True)
        subprocess.run([*pip, "--no-deps", "-e", str(lock.parent)], check=True)
        return {"seconds": time.perf_counter() - start, "lock": lock.name, "goal_seconds": 180}
