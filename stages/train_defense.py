"""Stage train_defense: train one purifier (HGD, AdvAE, EGC-FL, GCLN, ...) in front of the
frozen classifiers."""

from __future__ import annotations

import argparse
import sys

from repurify import paths
from repurify.data import load_dataset
from repurify.defenses import DefendedModel, get, save_defense
from repurify.io import write_json
from repurify.params import Params
from repurify.runtime import resolve_device, seed_everything
from repurify.tracking import stage_run
from repurify.training import accuracy, to_unit
from stages._cli import add_defense_arg, defense_slot, load_classifiers, run_stage


def train_defense(params: Params, args: argparse.Namespace) -> None:
    profile, prof, name = params.profile, params.active, args.defense
    spec = defense_slot(params, name, "train")
    device = resolve_device(args.device)
    ds = load_dataset(paths.path(paths.DATASET, profile))
    classifiers = load_classifiers(params)  # every input is checked before training starts
    s = ds.split
    gen = seed_everything(params.seed)
    with stage_run("train_defense", params, defense=name) as run:
        purifier, hist, info = get(spec.kind).fit(spec, to_unit(s.x_train), s.y_train, classifiers,
                                                  device=device, gen=gen)
        defended = DefendedModel(purifier, classifiers["target"]).to(device)
        clean = accuracy(defended, s.x_test, s.y_test, device)
        save_defense(paths.path(paths.DEFENSE, profile, defense=name), purifier.cpu(), spec, {
            "image_shape": list(ds.image_shape), "profile": profile, "defense": name,
            "classifiers": {r: getattr(prof.classifiers, r).model_dump(mode="json")
                            for r in paths.ROLES}})
        write_json(paths.path(paths.DEFENSE_METRICS, profile, defense=name), {
            "defense": name, "kind": spec.kind, "spec": spec.model_dump(mode="json"),
            "clean_accuracy": clean, "n_test": len(s.y_test),
            "epochs_run": len(hist.val_loss), "best_epoch": hist.best_epoch,
            "best_val_loss": hist.best_val_loss, "stopped_early": hist.stopped_early,
            "history": {"train_loss": hist.train_loss, "val_loss": hist.val_loss, "lr": hist.lr},
            **info})
        for epoch, (tl, vl, lr) in enumerate(zip(hist.train_loss, hist.val_loss, hist.lr, strict=True)):
            run.log_metrics({"train_loss": tl, "val_loss": vl, "lr": lr}, step=epoch)
        run.log_metrics({"clean_accuracy": clean, "best_val_loss": hist.best_val_loss,
                         "best_epoch": hist.best_epoch})
        print(f"train_defense: {name}: best validation loss {hist.best_val_loss:.4f} at epoch "
              f"{hist.best_epoch + 1}/{len(hist.val_loss)}; clean test accuracy {clean:.4f}")


if __name__ == "__main__":
    sys.exit(run_stage("train_defense", __doc__, train_defense, add_args=add_defense_arg))
