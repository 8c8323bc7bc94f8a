"""Stage train_classifier: train the target classifier and the substitute for transfer attacks."""

from __future__ import annotations

import argparse
import sys

from repurify import paths
from repurify.data import load_dataset
from repurify.io import write_json
from repurify.models.classifier import save_classifier
from repurify.params import Params
from repurify.runtime import resolve_device
from repurify.tracking import stage_run
from repurify.training import fit_classifier
from stages._cli import run_stage


def train_classifiers(params: Params, args: argparse.Namespace) -> None:
    profile = params.profile
    device = resolve_device(args.device)
    ds = load_dataset(paths.path(paths.DATASET, profile))  # fails before any training
    report: dict[str, dict] = {}
    with stage_run("train_classifier", params) as run:
        for role in paths.ROLES:
            cfg = getattr(params.active.classifiers, role)
            model, hist, meta = fit_classifier(cfg, ds, device, params.seed, role)
            acc = meta.pop("clean_accuracy")
            save_classifier(paths.path(paths.CLASSIFIER, profile, role=role), model.cpu(),
                            {**meta, "profile": profile})
            report[role] = {"arch": cfg.arch, "clean_accuracy": acc,
                            "train_accuracy": hist.accuracy[-1], "train_loss": hist.loss[-1],
                            "epochs": cfg.epochs, "n_test": len(ds.split.y_test)}
            for epoch, (loss, tr_acc) in enumerate(zip(hist.loss, hist.accuracy, strict=True)):
                run.log_metrics({f"{role}.train_loss": loss, f"{role}.train_accuracy": tr_acc},
                                step=epoch)
            run.log_metric(f"{role}.clean_accuracy", acc)
            print(f"train_classifier: {role} {cfg.arch}: clean test accuracy {acc:.4f}")
        write_json(paths.path(paths.CLASSIFIER_METRICS, profile), report)


if __name__ == "__main__":
    sys.exit(run_stage("train_classifier", __doc__, train_classifiers))
