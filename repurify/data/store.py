"""The on-disk dataset format shared by every stage (``data/<profile>/dataset.pt``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from repurify.data.base import Split
from repurify.errors import CheckpointError
from repurify.io import load_torch, save_torch

FORMAT_VERSION = 1


@dataclass(frozen=True)
class DatasetFile:
    """A prepared dataset plus the per-channel statistics the classifiers normalise with."""

    split: Split
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.split.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.split.x_train.shape[1:]
        return int(c), int(h), int(w)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NCHW images, in [0,1] units."""
    xf = x.double().div_(255.0)
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def save_dataset(path: str | Path, split: Split, name: str) -> DatasetFile:
    """Write ``split`` atomically with its training-set statistics."""
    mean, std = channel_stats(split.x_train)
    save_torch(path, {
        "format_version": FORMAT_VERSION,
        "name": name,
        "classes": list(split.classes),
        "mean": list(mean),
        "std": list(std),
        "x_train": split.x_train,
        "y_train": split.y_train,
        "x_test": split.x_test,
        "y_test": split.y_test,
    })
    return DatasetFile(split, name, mean, std)


def load_dataset(path: str | Path) -> DatasetFile:
    """Read a file written by :func:`save_dataset`, checking its structure."""
    blob = load_torch(path, produced_by="fetch_data")
    keys = {"format_version", "name", "classes", "mean", "std",
            "x_train", "y_train", "x_test", "y_test"}
    if not isinstance(blob, dict) or not keys <= blob.keys():
        raise CheckpointError(f"{path}: not a repurify dataset file; rerun the `fetch_data` stage")
    if blob["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format {blob['format_version']} but this code reads {FORMAT_VERSION}; "
            "rerun the `fetch_data` stage"
        )
    split = Split(blob["x_train"], blob["y_train"], blob["x_test"], blob["y_test"],
                  tuple(blob["classes"]))
    return DatasetFile(split, blob["name"], tuple(blob["mean"]), tuple(blob["std"]))
