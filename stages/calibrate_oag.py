"""Stage calibrate_oag: OAG's T_N (and eps_g, beta, initialisation) from Gaussian-noised training
images, the stopping criterion of its Sec. III-D (Fig. 4); no adversarial data is used."""

from __future__ import annotations

import argparse
import sys

from repurify import paths
from repurify.calibration import calibrate
from repurify.data import load_dataset
from repurify.io import write_json
from repurify.params import Params
from repurify.runtime import resolve_device, seed_everything
from repurify.tracking import stage_run
from repurify.training import to_unit
from stages._cli import load_classifiers, run_stage


def calibrate_oag(params: Params, args: argparse.Namespace) -> None:
    profile, spec = params.profile, params.active.defenses["oag"]
    device = resolve_device(args.device)
    s = load_dataset(paths.path(paths.DATASET, profile)).split
    target = load_classifiers(params, ("target",))["target"]
    seed_everything(params.seed)
    with stage_run("calibrate_oag", params, defense="oag") as run:
        result = calibrate(spec, target, to_unit(s.x_train), s.y_train, seed=params.seed,
                           device=device)
        write_json(paths.path(paths.OAG_CALIBRATION, profile), result)
        chosen = result["chosen"]
        best = next(c for c in result["candidates"]
                    if all(c[k] == chosen[k] for k in ("eps_g", "beta", "init_std")))
        for t, acc in enumerate(best["curve"], 1):
            run.log_metric("noisy_synthesis_accuracy", acc, step=t)
        run.log_metrics({f"chosen.{k}": float(v) for k, v in chosen.items()})
        print(f"calibrate_oag: {len(result['candidates'])} candidates on {result['images']} noised "
              f"training images (accuracy without OAG {result['noisy_accuracy']:.4f}); chose "
              f"eps_g {chosen['eps_g']:g}, beta {chosen['beta']:g}, init_std {chosen['init_std']:g},"
              f" T_N {chosen['network_steps']} (accuracy {best['curve'][chosen['network_steps'] - 1]:.4f})")


if __name__ == "__main__":
    sys.exit(run_stage("calibrate_oag", __doc__, calibrate_oag))
