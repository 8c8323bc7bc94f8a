"""Stage report: gather every defense's evaluation into reports/<profile>/report.md and summary.json."""

from __future__ import annotations

import argparse
import sys

from repurify import paths
from repurify.io import load_json, write_json, write_text
from repurify.params import Params
from repurify.report import render_markdown, summary_rows
from repurify.tracking import stage_run
from stages._cli import run_stage


def report(params: Params, args: argparse.Namespace) -> None:
    profile = params.profile
    classifiers = load_json(paths.path(paths.CLASSIFIER_METRICS, profile), "train_classifier")
    evaluations = {d: load_json(paths.path(paths.EVALUATION, profile, defense=d), f"evaluate_{d}")
                   for d in paths.DEFENSES}
    trained = {d: load_json(paths.path(paths.DEFENSE_METRICS, profile, defense=d), f"train_defense_{d}")
               for d in paths.TRAINED_DEFENSES}
    transfer = load_json(paths.path(paths.TRANSFER_METRICS, profile), "transfer")
    ablation = load_json(paths.path(paths.ABLATION_METRICS, profile), "ablation")
    calibration = load_json(paths.path(paths.OAG_CALIBRATION, profile), "calibrate_oag")
    with stage_run("report", params):
        rows = summary_rows(evaluations)
        write_json(paths.path(paths.SUMMARY, profile), {"profile": profile, "classifiers": classifiers,
                                                        "trained_defenses": trained, "rows": rows,
                                                        "transfer": transfer, "ablation": ablation,
                                                        "oag_calibration": calibration})
        write_text(paths.path(paths.REPORT, profile),
                   render_markdown(profile, params.active.description, classifiers, rows, trained,
                                   transfer, ablation, calibration))
        print(f"report: {paths.path(paths.REPORT, profile)} ({len(rows)} rows)")


if __name__ == "__main__":
    sys.exit(run_stage("report", __doc__, report))
