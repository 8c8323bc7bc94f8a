"""Defenses: the purifier interface, BPDA, baselines, trained purifiers, a factory from params."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repurify.defenses.advae import train_advae
from repurify.defenses.base import DefendedModel, Identity, Purifier, bpda, nondifferentiable
from repurify.defenses.baselines import BitDepth, Jpeg, MedianFilter
from repurify.defenses.checkpoint import load_defense, save_defense
from repurify.defenses.egcfl import train_egcfl
from repurify.defenses.gcln import train_gcln
from repurify.defenses.hgd import train_hgd
from repurify.defenses.oag import OAG, load_calibration, settings

__all__ = ["TRAINERS", "DefendedModel", "Identity", "Purifier", "bpda", "build_purifier",
           "load_defense", "nondifferentiable", "save_defense"]

# kind -> trainer(spec, x, y, classifiers, ...)
TRAINERS = {"hgd": train_hgd, "advae": train_advae, "egcfl": train_egcfl, "gcln": train_gcln}


def build_purifier(spec: Any, checkpoint: str | Path | None = None, name: str = "",
                   image_shape: tuple[int, ...] = (), seed: int = 0) -> Purifier:
    """Instantiate the purifier a ``profiles.<p>.defenses.<name>`` entry describes.

    Trained kinds are loaded from ``checkpoint`` and checked against ``spec``; OAG reads its
    calibration from ``checkpoint`` and draws its randomness from ``seed``.
    """
    if spec.kind in TRAINERS:
        if checkpoint is None:
            raise ValueError(f"defense kind {spec.kind!r} is trained: give its checkpoint")
        return load_defense(checkpoint, spec, name, image_shape)
    if spec.kind == "oag":
        if checkpoint is None:
            raise ValueError("defense kind 'oag' is calibrated: give its calibration file")
        chosen = load_calibration(str(checkpoint), spec, name)
        return OAG(settings(spec, chosen), seed, spec.batch_size)
    if spec.kind == "none":
        return Identity()
    if spec.kind == "jpeg":
        return Jpeg(spec.quality)
    if spec.kind == "bit_depth":
        return BitDepth(spec.bits)
    if spec.kind == "median_filter":
        return MedianFilter(spec.kernel)
    raise KeyError(f"no purifier for defense kind {spec.kind!r}")
