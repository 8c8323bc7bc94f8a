"""Stage calibrate: fit what a calibrated defense leaves open on training data alone (OAG: T_N,
eps_g, beta and the initialisation from Gaussian-noised images, its Sec. III-D, Fig. 4); no
adversarial data is used."""

from __future__ import annotations

import argparse
import sys

from repurify import paths
from repurify.data import load_dataset
from repurify.defenses import get
from repurify.io import write_json
from repurify.params import Params
from repurify.runtime import resolve_device, seed_everything
from repurify.tracking import stage_run
from repurify.training import to_unit
from stages._cli import add_defense_arg, defense_slot, load_classifiers, run_stage


def calibrate(params: Params, args: argparse.Namespace) -> None:
    profile, name = params.profile, args.defense
    spec = defense_slot(params, name, "calibrate")
    device = resolve_device(args.device)
    s = load_dataset(paths.path(paths.DATASET, profile)).split
    target = load_classifiers(params, ("target",))["target"]
    seed_everything(params.seed)
    with stage_run("calibrate", params, defense=name) as run:
        result, series = get(spec.kind).fit(spec, target, to_unit(s.x_train), s.y_train,
                                            seed=params.seed, device=device)
        write_json(paths.path(paths.CALIBRATION, profile, defense=name), result)
        for key, values in series.items():
            for t, value in enumerate(values, 1):
                run.log_metric(key, value, step=t)
        run.log_metrics({f"chosen.{k}": float(v) for k, v in result["chosen"].items()})


if __name__ == "__main__":
    sys.exit(run_stage("calibrate", __doc__, calibrate, add_args=add_defense_arg))
