"""Stage report: gather every defense's evaluation into reports/<profile>/report.md and summary.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from repurify import paths
from repurify.errors import CheckpointError
from repurify.io import write_json, write_text
from repurify.params import Params
from repurify.report import render_markdown, summary_rows
from repurify.tracking import stage_run
from stages._cli import run_stage


def _read(path: str, produced_by: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found; run the `{produced_by}` stage first") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt JSON ({exc}); rerun `{produced_by}`") from None


def report(params: Params, args: argparse.Namespace) -> None:
    profile = params.profile
    classifiers = _read(paths.path(paths.CLASSIFIER_METRICS, profile), "train_classifier")
    evaluations = {d: _read(paths.path(paths.EVALUATION, profile, defense=d), f"evaluate_{d}")
                   for d in paths.DEFENSES}
    trained = {d: _read(paths.path(paths.DEFENSE_METRICS, profile, defense=d), f"train_defense_{d}")
               for d in paths.TRAINED_DEFENSES}
    transfer = _read(paths.path(paths.TRANSFER_METRICS, profile), "transfer")
    ablation = _read(paths.path(paths.ABLATION_METRICS, profile), "ablation")
    with stage_run("report", params):
        rows = summary_rows(evaluations)
        write_json(paths.path(paths.SUMMARY, profile), {"profile": profile, "classifiers": classifiers,
                                                        "trained_defenses": trained, "rows": rows,
                                                        "transfer": transfer, "ablation": ablation})
        write_text(paths.path(paths.REPORT, profile),
                   render_markdown(profile, params.active.description, classifiers, rows, trained,
                                   transfer, ablation))
        print(f"report: {paths.path(paths.REPORT, profile)} ({len(rows)} rows)")


if __name__ == "__main__":
    sys.exit(run_stage("report", __doc__, report))
