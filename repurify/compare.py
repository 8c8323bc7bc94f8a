"""Compare two pipeline runs from MLflow: their stage runs' metrics and the params that differ.

    python -m repurify.compare                         # the two most recent pipeline runs
    python -m repurify.compare RUN_A RUN_B             # two pipeline run ids (unique prefixes)
    python -m repurify.compare --profiles digits smoke # the latest pipeline run of each profile
    python -m repurify.compare --list                  # all pipeline runs
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from repurify.errors import RepurifyError
from repurify.tracking import KIND_TAG, tracking_uri

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

NOTE = ("A pipeline run holds only the stages that ran in its invocation (DVC and Snakemake skip "
        "up-to-date stages);\n'-' marks a value the run does not have.")


class CompareError(RepurifyError):
    """No pipeline runs, an unknown or ambiguous run id, or a profile without runs."""


def _client() -> MlflowClient:
    """A client of the tracking store; a missing SQLite file is an error, not created."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise CompareError(f"no MLflow store at {uri}; run a stage first")
    return MlflowClient(tracking_uri=uri)


def _search(client: MlflowClient, kind: str, extra: str = "") -> list[Run]:
    """All runs of ``kind`` (pipeline|stage) in every experiment, newest first."""
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.`{KIND_TAG}` = '{kind}'" + (f" and {extra}" if extra else "")
    runs: list[Run] = []
    token = None
    while exp_ids:
        page = client.search_runs(exp_ids, query, order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        if not (token := page.token):
            break
    return runs


def _stages(client: MlflowClient, pipeline: Run) -> list[Run]:
    return _search(client, "stage", f"tags.`mlflow.parentRunId` = '{pipeline.info.run_id}'")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _table(header: list[str], rows: list[list[str]], numbers: bool = False) -> str:
    """Columns padded to their widest cell; with ``numbers`` all but the first right-aligned."""
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if numbers and i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip()
                     for line in lines)


def pick(client: MlflowClient, ids: list[str], profiles: list[str]) -> tuple[Run, Run]:
    """The two pipeline runs to compare: by id prefix, by profile, or the two most recent."""
    runs = _search(client, "pipeline")
    if not runs:
        raise CompareError(f"no pipeline runs in {tracking_uri()}")
    if profiles:
        found = []
        for prof in profiles:
            match = [r for r in runs if r.data.tags.get("profile") == prof]
            if not match:
                raise CompareError(f"no pipeline run of profile {prof!r}")
            found.append(match[0])
        return found[0], found[1]
    if ids:
        found = []
        for prefix in ids:
            match = [r for r in runs if r.info.run_id.startswith(prefix)]
            if len(match) != 1:
                what = "unknown" if not match else f"ambiguous ({len(match)} runs match)"
                raise CompareError(f"pipeline run id {prefix!r}: {what}; see --list")
            found.append(match[0])
        return found[0], found[1]
    if len(runs) < 2:
        raise CompareError(f"only one pipeline run in {tracking_uri()}; nothing to compare")
    return runs[1], runs[0]


def collect(stages: list[Run]) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics as ``stage[defense]/metric``, and the union of the stage runs' params.

    Stage runs come newest first; a stage recorded twice under one key keeps its latest values.
    """
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    for run in reversed(stages):
        tags = run.data.tags
        label = tags.get("stage", run.info.run_name) + (f"[{tags['defense']}]" if "defense" in tags else "")
        metrics.update({f"{label}/{k}": v for k, v in run.data.metrics.items()})
        params.update(run.data.params)
    return metrics, params


def _num(values: dict[str, float], key: str) -> str:
    return f"{values[key]:.6g}" if key in values else "-"


def _cut(text: str, width: int = 50) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def compare(client: MlflowClient, a: Run, b: Run) -> str:
    """The report: both runs, their metrics side by side with B-A, then the params that differ."""
    out, collected = [], []
    for name, run in (("A", a), ("B", b)):
        stages = _stages(client, run)
        collected.append(collect(stages))
        commit = run.data.tags.get("git_commit", "?")[:10]
        out.append(f"{name}: {run.info.run_id}  {run.info.run_name}  {_when(run.info.start_time)}  "
                   f"{run.info.status}  {len(stages)} stages  commit {commit}")
    (ma, pa), (mb, pb) = collected
    rows = [[k, _num(ma, k), _num(mb, k), f"{mb[k] - ma[k]:+.6g}" if k in ma and k in mb else "-"]
            for k in sorted(ma.keys() | mb.keys())]
    out += [NOTE, "", _table(["metric", "A", "B", "B-A"], rows, numbers=True) if rows else "(no metrics)", ""]
    diff = [[k, _cut(pa.get(k, "-")), _cut(pb.get(k, "-"))]
            for k in sorted(pa.keys() | pb.keys()) if pa.get(k) != pb.get(k)]
    out.append(_table(["param", "A", "B"], diff) if diff else "params: identical")
    return "\n".join(out)


def listing(client: MlflowClient) -> str:
    """One line per pipeline run, newest first."""
    runs = _search(client, "pipeline")
    if not runs:
        raise CompareError(f"no pipeline runs in {tracking_uri()}")
    counts = Counter(r.data.tags.get("mlflow.parentRunId") for r in _search(client, "stage"))
    rows = [[r.info.run_id, _when(r.info.start_time), r.data.tags.get("profile", "?"),
             r.data.tags.get("engine", "?"), str(counts[r.info.run_id]), r.info.status] for r in runs]
    return _table(["run id", "start", "profile", "engine", "stages", "status"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repurify.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", metavar="RUN", help="two pipeline run ids (unique prefixes suffice)")
    ap.add_argument("--profiles", nargs=2, metavar="PROFILE", default=[],
                    help="compare the latest pipeline run of each profile")
    ap.add_argument("--list", action="store_true", help="list the pipeline runs and exit")
    args = ap.parse_args(argv)
    if len(args.runs) not in (0, 2):
        ap.error("give two pipeline run ids, or none")
    if args.runs and args.profiles:
        ap.error("give run ids or --profiles, not both")
    try:
        client = _client()
        print(listing(client) if args.list else compare(client, *pick(client, args.runs, args.profiles)))
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (`| head`) has stopped: end quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
    return 0


if __name__ == "__main__":
    sys.exit(main())
