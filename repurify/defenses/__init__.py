"""Defenses: the purifier interface, BPDA, the registry of defense kinds, and a factory that
builds the purifier a ``defenses.<name>`` entry describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repurify.defenses.base import DefendedModel, Identity, Purifier, bpda, nondifferentiable
from repurify.defenses.checkpoint import load_calibration, load_defense, save_defense
from repurify.defenses.registry import BuildContext, PurifierDef, get, list_purifiers, registry

__all__ = ["BuildContext", "DefendedModel", "Identity", "Purifier", "PurifierDef", "bpda",
           "build_purifier", "get", "list_purifiers", "load_calibration", "load_defense",
           "nondifferentiable", "registry", "save_defense"]


def build_purifier(spec: Any, artifact: str | Path | None = None, name: str = "",
                   image_shape: tuple[int, ...] = (), seed: int = 0) -> Purifier:
    """Instantiate the purifier a ``profiles.<p>.defenses.<name>`` entry describes.

    A trained kind is loaded from its checkpoint ``artifact`` and checked against ``spec``; a
    calibrated one reads what its calibrator chose from ``artifact``. ``seed`` seeds its
    randomness.
    """
    entry = get(spec.kind)
    if entry.prepare != "none" and artifact is None:
        raise ValueError(f"defense kind {spec.kind!r} is prepared by its `{entry.prepare}` stage: "
                         "give what that stage wrote")
    if entry.prepare == "train":
        return load_defense(artifact, spec, name, image_shape)
    calibration = load_calibration(artifact, spec, name) if entry.prepare == "calibrate" else {}
    return entry.build(spec, BuildContext(tuple(image_shape), seed, calibration))
