"""Stage evaluate: one defense under every attack and threat model (oblivious, black-box,
adaptive white-box with BPDA/EOT)."""

from __future__ import annotations

import argparse
import sys

from repurify import paths
from repurify.evaluation import evaluate_defense
from repurify.io import write_json
from repurify.params import Params
from repurify.runtime import resolve_device
from repurify.tracking import stage_run
from stages._cli import add_defense_arg, defense_slot, load_cached_attacks, run_stage
from stages._defended import load_defended


def evaluate(params: Params, args: argparse.Namespace) -> None:
    profile, prof, defense = params.profile, params.active, args.defense
    device = resolve_device(args.device)
    cached = {role: load_cached_attacks(profile, role) for role in paths.ROLES}
    spec = defense_slot(params, defense)
    defended, data = load_defended(params, defense, device)
    with stage_run("evaluate", params, defense=defense) as run:
        result = evaluate_defense(defended, prof, data, cached, seed=params.seed, device=device,
                                  limit=prof.evaluation.limits.get(defense),
                                  adaptive=prof.evaluation.adaptive_for(defense))
        result = {"defense": defense, "spec": spec.model_dump(mode="json"), **result}
        write_json(paths.path(paths.EVALUATION, profile, defense=defense), result)
        run.log_metric("clean_accuracy", result["clean_accuracy"])
        run.log_metric("worst_case", result["worst_case"]["accuracy"])
        for row in result["results"]:
            source = row.get("source", "adaptive")
            run.log_metric(f"accuracy.{row['threat_model']}.{source}.{row['attack']}",
                           row["accuracy"])
            run.log_child(f"{defense}:{row['attack']}:{row['threat_model']}:{source}",
                          {"defense": defense, "attack": row["attack"],
                           "threat_model": row["threat_model"], "source": source},
                          {"accuracy": row["accuracy"], "n": row["n"]})
        worst = result["worst_case"]
        print(f"evaluate: {defense}: clean {result['clean_accuracy']:.4f}, worst case "
              f"{worst['accuracy']:.4f} +- {worst['se']:.4f} (n {worst['n']}), "
              f"{len(result['results'])} attack rows")


if __name__ == "__main__":
    sys.exit(run_stage("evaluate", __doc__, evaluate, add_args=add_defense_arg))
