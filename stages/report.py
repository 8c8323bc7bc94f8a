"""Stage report: gather every defense's evaluation and probes, the gradient-masking verdicts and
each paper's claims into reports/<profile>/report.md and summary.json, with the figures (PNG)
and their data (CSV, for `dvc plots`)."""

from __future__ import annotations

import argparse
import os
import sys

from repurify import paths, plots
from repurify.claims import DATA_NOTES, compare, load_claims
from repurify.io import load_json, write_json, write_text
from repurify.masking import assess
from repurify.params import Params, ProfileParams, prepared
from repurify.report import collapsed, headline, render_markdown, summary_rows
from repurify.tracking import stage_run
from stages._cli import run_stage

CLAIMS = "reference/claims.yaml"


def series(prof: ProfileParams, evaluations: dict, probes: dict, ablation: dict,
           calibration: dict | None) -> dict[str, plots.Rows]:
    """The rows of every plot in :data:`repurify.plots.PLOTS` (empty where the profile lacks the
    defense or the experiment a plot shows)."""
    gcln = prof.defenses.get("gcln")
    q_variants = {v.name: v.spec(gcln).q for v in prof.ablation.variants
                  if v.defense == "gcln" and "q" in v.set}
    return {
        "eps_sweep": plots.eps_sweep_rows(probes),
        "iterations": plots.iteration_rows(probes),
        "gen_k": plots.gen_k_rows(ablation),
        "qs_sweep": plots.key_sweep_rows(ablation, q_variants, "q", gcln.q,
                                         evaluations["gcln"]["results"]) if gcln else [],
        "oag_steps": plots.oag_step_rows(calibration) if calibration else [],
        "noise_energy": plots.noise_energy_rows(ablation),
    }


def report(params: Params, args: argparse.Namespace) -> None:
    profile, prof = params.profile, params.active
    claims = load_claims(CLAIMS)
    classifiers = load_json(paths.path(paths.CLASSIFIER_METRICS, profile), "train_classifier")
    slots = list(prof.defenses)
    evaluations = {d: load_json(paths.path(paths.EVALUATION, profile, defense=d), f"evaluate_{d}")
                   for d in slots}
    probes = {d: load_json(paths.path(paths.CHECKS, profile, defense=d), f"check_{d}") for d in slots}
    trained = {d: load_json(paths.path(paths.DEFENSE_METRICS, profile, defense=d), f"train_defense_{d}")
               for d in prepared(prof, "train")}
    transfer = (load_json(paths.path(paths.TRANSFER_METRICS, profile), "transfer")
                if prof.transfer.runs else {"zoo": {}, "rows": []})
    num_classes = len(load_json(paths.path(paths.MANIFEST, profile), "fetch_data")["classes"])
    ablation = (load_json(paths.path(paths.ABLATION_METRICS, profile), "ablation")
                if prof.ablation.runs else {"rows": []})
    calibration = (load_json(paths.path(paths.CALIBRATION, profile, defense="oag"), "calibrate_oag")
                   if "oag" in prepared(prof, "calibrate") else None)
    with stage_run("report", params) as run:
        rows = summary_rows(evaluations)
        bare = {name: c["clean_accuracy"] for name, c in {**classifiers, **transfer["zoo"]}.items()}
        transfer = {**transfer, "collapsed": collapsed(transfer["rows"], num_classes, bare)}
        masking = {d: assess(evaluations[d], probes[d]) for d in slots}
        comparison = compare(claims, prof, evaluations)
        report_dir = os.path.dirname(paths.path(paths.REPORT, profile))
        figures = {}
        for name, data in series(prof, evaluations, probes, ablation, calibration).items():
            plot, png = plots.PLOTS[name], paths.path(paths.FIGURE, profile, name=name)
            plots.write_csv(paths.path(paths.PLOT_DATA, profile, name=name), plot, data)
            plots.draw(png, plot, data)
            figures[plot.title] = os.path.relpath(png, report_dir)
        for d in slots:
            figures[f"{d}: clean / adversarial / purified"] = os.path.relpath(
                paths.path(paths.GRID, profile, defense=d), report_dir)
        write_json(paths.path(paths.HEADLINE, profile),
                   headline(evaluations, masking, prof.evaluation.checks.attack))
        write_json(paths.path(paths.SUMMARY, profile), {
            "profile": profile, "classifiers": classifiers, "trained_defenses": trained, "rows": rows,
            "checks": probes, "masking": masking, "claims": comparison, "transfer": transfer,
            "ablation": ablation, "oag_calibration": calibration})
        write_text(paths.path(paths.REPORT, profile),
                   render_markdown(profile, prof.description, classifiers, rows, trained, transfer,
                                   ablation, calibration, masking,
                                   (comparison, {p: c.title for p, c in claims.papers.items()}), figures,
                                   evaluations, prof.evaluation.checks.attack,
                                   data_note=DATA_NOTES.get(prof.data.name)))
        for d, m in masking.items():
            run.log_metric(f"masking.{d}.failed_checks", len(m["failed"]))
            run.log_metric(f"masking.{d}.checks_not_run", len(m["not_run"]))
        print(f"report: {paths.path(paths.REPORT, profile)} ({len(rows)} rows); masking suspected: "
              f"{[d for d, m in masking.items() if m['verdict'] == 'suspected']}; inconclusive: "
              f"{[d for d, m in masking.items() if m['verdict'] == 'inconclusive']}")


if __name__ == "__main__":
    sys.exit(run_stage("report", __doc__, report))
