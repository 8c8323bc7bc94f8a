"""Stage generate_attacks: craft every cached attack on the target (oblivious) and the substitute
(transfer), once, for all defenses to reuse."""

from __future__ import annotations

import argparse
import sys

import torch

from repurify import paths
from repurify.attacks import run_attack
from repurify.attacks.base import perturbation_norm
from repurify.data import load_dataset
from repurify.evaluation import agreement, load_eval_data, predict
from repurify.io import save_torch, write_json
from repurify.params import Params
from repurify.progress import progress
from repurify.runtime import resolve_device, seed_everything
from repurify.tracking import stage_run
from stages._cli import load_classifiers, run_stage

THREAT_OF_ROLE = {"target": "oblivious", "substitute": "blackbox"}


def generate_attacks(params: Params, args: argparse.Namespace) -> None:
    profile, prof = params.profile, params.active
    device = resolve_device(args.device)
    models = load_classifiers(params)
    data = load_eval_data(load_dataset(paths.path(paths.DATASET, profile)).split, prof,
                          models["target"], device)
    report: dict[str, dict] = {}
    with stage_run("generate_attacks", params) as run:
        for role, model in models.items():
            seed_everything(params.seed)
            model = model.to(device)
            threat = THREAT_OF_ROLE[role]
            specs = [(n, s) for n, s in prof.attacks.items() if threat in s.threat_models]
            adversarial, targets, report[role] = {}, {}, {}
            for name, spec in progress(specs, f"attacks on {role}", "attack"):
                n = min(len(data.y), spec.n or len(data.y))
                x, y = data.x[:n].to(device), data.y[:n]
                adv, tgt = run_attack(spec, model, x, y.to(device), num_classes=data.num_classes,
                                      batch_size=prof.evaluation.batch_size, seed=params.seed,
                                      early_stop=False)
                adversarial[name] = adv.cpu()
                if tgt is not None:
                    targets[name] = tgt.cpu()
                acc = agreement(predict(model, adv, prof.evaluation.batch_size), y)
                dist = perturbation_norm(x, adv, spec.norm)
                report[role][name] = {"accuracy": acc, "n": n, "norm": spec.norm,
                                      "mean_perturbation": float(dist.mean()),
                                      "max_perturbation": float(dist.max())}
                run.log_metric(f"{role}.{name}.accuracy", acc)
                print(f"generate_attacks: {name} on {role}: accuracy {acc:.4f} (n={n})")
            save_torch(paths.path(paths.ADVERSARIAL, profile, role=role),
                       {"adversarial": adversarial, "targets": targets, "labels": data.y})
        write_json(paths.path(paths.ATTACK_METRICS, profile), report)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(run_stage("generate_attacks", __doc__, generate_attacks))
