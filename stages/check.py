"""Stage check: gradient-masking probes on one defense (white-box eps sweep to an unbounded
budget, accuracy per attack iteration, Square, zero gradients, randomness) and its figure of
clean / adversarial / purified images."""

from __future__ import annotations

import argparse
import sys

import torch

from repurify import paths
from repurify.checks import probe
from repurify.evaluation import Scoring
from repurify.io import write_json
from repurify.params import Params
from repurify.plots import image_grid
from repurify.runtime import resolve_device
from repurify.tracking import stage_run
from stages._cli import add_defense_arg, load_cached_attacks, run_stage
from stages._defended import load_defended


def check(params: Params, args: argparse.Namespace) -> None:
    profile, prof, defense = params.profile, params.active, args.defense
    device = resolve_device(args.device)
    ev = prof.evaluation
    checks, n = ev.checks_for(defense), ev.adaptive_for(defense).n
    oblivious = load_cached_attacks(profile, "target")["adversarial"][checks.attack]
    defended, data = load_defended(params, defense, device)
    scoring = Scoring.of(defended, ev.batch_size, ev.eot_samples, ev.draws)
    with stage_run("check", params, defense=defense) as run:
        result = probe(defended, checks, prof.attacks[checks.attack], data.x[:n].to(device),
                       data.y[:n], num_classes=data.num_classes, scoring=scoring, seed=params.seed)
        write_json(paths.path(paths.CHECKS, profile, defense=defense), {"defense": defense, **result})
        k = checks.grid
        with torch.no_grad():
            purified = defended.purifier(oblivious[:k].to(device))
        image_grid(paths.path(paths.GRID, profile, defense=defense),
                   {"clean": data.x[:k], f"{checks.attack} (oblivious)": oblivious[:k],
                    f"{defense} output": purified},
                   f"{defense}: clean / adversarial / purified ({profile})")
        for p in result["eps_sweep"]:
            run.log_metric(f"check.eps_sweep.{p['eps']:.4g}", p["accuracy"])
        if result["square"]:
            run.log_metric("check.square", result["square"]["accuracy"])
        print(f"check: {defense}: accuracy at the largest eps {result['eps_sweep'][-1]['accuracy']:.3f}, "
              f"zero gradients {result['zero_gradient']}")


if __name__ == "__main__":
    sys.exit(run_stage("check", __doc__, check, add_args=add_defense_arg))
