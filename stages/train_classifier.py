"""Stage train_classifier: train the target classifier and the substitute for transfer attacks."""

from __future__ import annotations

import argparse
import sys

from repurify import paths
from repurify.data import load_dataset
from repurify.io import write_json
from repurify.models import build_classifier
from repurify.models.classifier import save_classifier
from repurify.params import Params
from repurify.runtime import resolve_device, seed_everything
from repurify.tracking import stage_run
from repurify.training import accuracy, train_classifier
from stages._cli import run_stage


def train_classifiers(params: Params, args: argparse.Namespace) -> None:
    profile = params.profile
    device = resolve_device(args.device)
    ds = load_dataset(paths.path(paths.DATASET, profile))  # fails before any training
    s = ds.split
    report: dict[str, dict] = {}
    with stage_run("train_classifier", params) as run:
        for role in paths.ROLES:
            cfg = getattr(params.active.classifiers, role)
            gen = seed_everything(params.seed + cfg.seed_offset)
            model = build_classifier(cfg.arch, ds.image_shape, ds.num_classes, ds.mean, ds.std)
            hist = train_classifier(model, s.x_train, s.y_train, cfg, device, gen,
                                    desc=f"{role} ({cfg.arch})")
            acc = accuracy(model, s.x_test, s.y_test, device)
            save_classifier(paths.path(paths.CLASSIFIER, profile, role=role), model.cpu(), {
                "arch": cfg.arch, "image_shape": list(ds.image_shape),
                "num_classes": ds.num_classes, "mean": list(ds.mean), "std": list(ds.std),
                "profile": profile, "role": role, "params": cfg.model_dump(mode="json"),
            })
            report[role] = {"arch": cfg.arch, "clean_accuracy": acc,
                            "train_accuracy": hist.accuracy[-1], "train_loss": hist.loss[-1],
                            "epochs": cfg.epochs, "n_test": len(s.y_test)}
            for epoch, (loss, tr_acc) in enumerate(zip(hist.loss, hist.accuracy, strict=True)):
                run.log_metrics({f"{role}.train_loss": loss, f"{role}.train_accuracy": tr_acc},
                                step=epoch)
            run.log_metric(f"{role}.clean_accuracy", acc)
            print(f"train_classifier: {role} {cfg.arch}: clean test accuracy {acc:.4f}")
        write_json(paths.path(paths.CLASSIFIER_METRICS, profile), report)


if __name__ == "__main__":
    sys.exit(run_stage("train_classifier", __doc__, train_classifiers))
