"""The defended model a per-defense stage attacks: the profile's slot before the frozen target."""

from __future__ import annotations

import torch

from repurify import paths
from repurify.data import load_dataset
from repurify.defenses import DefendedModel, build_purifier, get
from repurify.evaluation import EvalData, load_eval_data
from repurify.params import Params
from repurify.runtime import seed_everything
from stages._cli import defense_slot, load_classifiers


def load_defended(params: Params, defense: str, device: torch.device) -> tuple[DefendedModel, EvalData]:
    """The evaluated test images and ``defense`` (built after seeding) before the frozen target."""
    profile, spec = params.profile, defense_slot(params, defense)
    target = load_classifiers(params, ("target",))["target"]
    data = load_eval_data(load_dataset(paths.path(paths.DATASET, profile)).split, params.active, target,
                          device)
    seed_everything(params.seed)
    artifact = paths.artifact(defense, get(spec.kind).prepare)
    purifier = build_purifier(spec, artifact and paths.path(artifact, profile), defense,
                              tuple(data.x.shape[1:]), seed=params.seed)
    return DefendedModel(purifier, target).to(device).eval(), data
