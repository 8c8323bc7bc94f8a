"""Stage ablation: EGC-FL Gen_k and TDZ noise energy, retrained defense variants (EGC-FL
without transform / feedback, GCLN's quantization-step sweep) and OAG variants (T_I, kernel
size, the online auto-encoder)."""

from __future__ import annotations

import argparse
import sys

from repurify import paths
from repurify.ablation import run_ablation
from repurify.data import load_dataset
from repurify.defenses import load_defense
from repurify.evaluation import load_eval_data
from repurify.io import atomic_dir, write_json
from repurify.params import Params
from repurify.runtime import resolve_device, seed_everything
from repurify.tracking import stage_run
from repurify.training import to_unit
from stages._cli import calibration, load_cached_attacks, load_classifiers, run_stage


def ablation(params: Params, args: argparse.Namespace) -> None:
    profile, prof = params.profile, params.active
    device = resolve_device(args.device)
    ds = load_dataset(paths.path(paths.DATASET, profile))
    classifiers = load_classifiers(params)
    cached = load_cached_attacks(profile, "target")
    ab = prof.ablation
    egcfl = (load_defense(paths.path(paths.DEFENSE, profile, defense="egcfl"), prof.defenses["egcfl"],
                          "egcfl", tuple(ds.image_shape)) if ab.generations or ab.noise_attack else None)
    oag_chosen = calibration(params, "oag") if any(
        prof.defenses[v.defense].kind == "oag" for v in ab.variants) else {}
    s = ds.split
    data = load_eval_data(s, prof, classifiers["target"], device)  # the images of the cached attacks
    seed_everything(params.seed)
    with stage_run("ablation", params) as run, atomic_dir(paths.path(paths.ABLATION, profile)) as out:
        result = run_ablation(prof, classifiers, egcfl, oag_chosen, (to_unit(s.x_train), s.y_train),
                              (data.x, data.y), cached["adversarial"],
                              num_classes=ds.num_classes, seed=params.seed, device=device, out_dir=out)
        write_json(paths.path(paths.ABLATION_METRICS, profile), result)
        for r in result["rows"]:
            source = r.get("source", "adaptive" if r["threat_model"] == "whitebox" else "")
            run.log_metric(f"ablation.{r['variant']}.{r['threat_model']}{source and '.' + source}."
                           f"{r['attack']}", r["accuracy"])
        if "noise_energy" in result:
            run.log_metric("ablation.noise_energy_ratio", result["noise_energy"]["ratio"])
        print(f"ablation: {len(prof.ablation.variants)} variants, {len(result['rows'])} rows")


if __name__ == "__main__":
    sys.exit(run_stage("ablation", __doc__, ablation))
