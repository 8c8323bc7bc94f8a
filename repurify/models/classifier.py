"""A classifier over [0,1] pixels: per-channel normalisation lives inside the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from repurify.errors import CheckpointError
from repurify.io import load_torch, save_torch
from repurify.models.registry import build_model
from repurify.passes import Counted

FORMAT_VERSION = 1


class Classifier(Counted):
    """``net((x - mean) / std)``; attacks and defenses always see [0,1] pixels."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_classifier(arch: str, image_shape: tuple[int, int, int], num_classes: int,
                     mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    c, h, _ = image_shape
    return Classifier(build_model(arch, c, num_classes, h), mean, std)


def save_classifier(path: str | Path, model: Classifier, meta: dict[str, Any]) -> None:
    """Save weights plus everything needed to rebuild the model (``meta``: arch, shape...)."""
    save_torch(path, {"format_version": FORMAT_VERSION, **meta,
                      "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}})


def load_classifier(path: str | Path, expect: dict[str, Any] | None = None) -> Classifier:
    """Rebuild a classifier; ``expect`` keys (e.g. the params that built it) must match."""
    blob = load_torch(path, produced_by="train_classifier")
    required = {"format_version", "arch", "image_shape", "num_classes", "mean", "std", "state_dict"}
    if not isinstance(blob, dict) or not required <= blob.keys():
        raise CheckpointError(f"{path}: not a repurify classifier checkpoint; rerun "
                              "the `train_classifier` stage")
    for key, want in (expect or {}).items():
        if blob.get(key) != want:
            raise CheckpointError(
                f"{path}: built with {key}={blob.get(key)!r} but the params ask for {want!r}; "
                "rerun the `train_classifier` stage (dvc repro / snakemake) to rebuild it"
            )
    model = build_classifier(blob["arch"], tuple(blob["image_shape"]), blob["num_classes"],
                             tuple(blob["mean"]), tuple(blob["std"]))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {blob['arch']}: {str(exc)[:300]}") from None
    return model.eval()
