"""The on-disk dataset format shared by every stage (``data/<profile>/dataset.pt``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from repurify.data.base import Split
from repurify.errors import CheckpointError
from repurify.io import load_torch, save_torch

FORMAT_VERSION = 1
STATS_CHUNK = 4096  # images converted to float64 at a time for the channel statistics


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


def channel_stats(x: torch.Tensor, chunk: int = STATS_CHUNK) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std of uint8 NCHW images, in [0,1] units, from float64
    copies of ``chunk`` images at a time (two passes: the mean, then the squared deviations)."""
    count = x.shape[0] * x.shape[2] * x.shape[3]

    def total(f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return sum((f(x[i:i + chunk].double().div_(255.0)).sum(dim=(0, 2, 3))
                    for i in range(0, x.shape[0], chunk)), torch.zeros(x.shape[1], dtype=torch.float64))

    mean = total(lambda b: b) / count
    std = (total(lambda b: (b - mean.view(1, -1, 1, 1)).square_()) / (count - 1)).sqrt().clamp_min(1e-3)
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
    blob = load_torch(path, produced_by="fetch_data", mmap=True)  # only the images read
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
