"""Stage transfer: trained defenses moved to other classifiers (AdvAE Table 3, HGD Table 4)."""

from __future__ import annotations

import argparse
import sys

from repurify import paths
from repurify.data import load_dataset
from repurify.defenses import load_defense
from repurify.io import atomic_dir, write_json
from repurify.models.classifier import save_classifier
from repurify.params import Params
from repurify.runtime import resolve_device, seed_everything
from repurify.tracking import stage_run
from repurify.training import fit_classifier, to_unit
from repurify.transfer import reused, run_grid, trains
from stages._cli import calibration, load_classifiers, run_stage


def transfer(params: Params, args: argparse.Namespace) -> None:
    profile, prof = params.profile, params.active
    tr = prof.transfer
    device = resolve_device(args.device)
    ds = load_dataset(paths.path(paths.DATASET, profile))
    classifiers = load_classifiers(params)
    oag_chosen = calibration(params, "oag") if any(e.defense == "oag" for e in tr.grid) else None
    slots = {slot: load_defense(paths.path(paths.DEFENSE, profile, defense=slot), prof.defenses[slot],
                                slot, tuple(ds.image_shape)) for slot in reused(prof)}
    s = ds.split
    with stage_run("transfer", params) as run, atomic_dir(paths.path(paths.TRANSFER, profile)) as out:
        zoo = {}
        for name, cfg in tr.zoo.items():  # the extra models (AdvAE Table 2)
            model, _, meta = fit_classifier(cfg, ds, device, params.seed, f"zoo {name}")
            zoo[name] = {"arch": cfg.arch, "clean_accuracy": meta.pop("clean_accuracy")}
            save_classifier(out / f"zoo_{name}.pt", model.cpu(), {**meta, "profile": profile})
            classifiers[name] = model.to(device)
            print(f"transfer: zoo {name} {cfg.arch}: clean test accuracy {zoo[name]['clean_accuracy']:.4f}")
        for model in classifiers.values():
            model.eval().requires_grad_(False)
        seed_everything(params.seed)
        train = (to_unit(s.x_train), s.y_train) if trains(prof) else None  # only what the grid needs
        rows = run_grid(prof, classifiers, train, (to_unit(s.x_test[:tr.n]), s.y_test[:tr.n]),
                        oag_chosen=oag_chosen, num_classes=ds.num_classes, seed=params.seed,
                        device=device, out_dir=out, slots=slots)
        write_json(paths.path(paths.TRANSFER_METRICS, profile), {"zoo": zoo, "rows": rows})
        for r in rows:
            run.log_metric(f"transfer.{r['column']}.{r['attack']}", r["accuracy"])
        print(f"transfer: {len(tr.grid)} grid entries, {len(rows)} rows")


if __name__ == "__main__":
    sys.exit(run_stage("transfer", __doc__, transfer))
