"""The dataset registry (one loader module per dataset) and the shared uint8 NCHW normalisation."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from repurify.data.params import DataParams


@dataclass(frozen=True)
class Split:
    """A dataset as uint8 NCHW images with int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]


SOURCES = "repurify.data.sources"  # one module per dataset, imported by name when loaded


@cache
def list_datasets() -> list[str]:
    """The dataset names: the modules of :data:`SOURCES` (listed, not imported), sorted."""
    package = importlib.import_module(SOURCES)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def source_module(name: str) -> str:
    """The module that loads dataset ``name``: the one code dependency of fetching it."""
    if name not in list_datasets():
        raise KeyError(f"unknown dataset {name!r}; choose one of {list_datasets()}")
    return f"{SOURCES}.{name}"


def load_raw(p: DataParams) -> Split:
    """The dataset ``p.name`` as its loader returns it, before :func:`prepare`."""
    return importlib.import_module(source_module(p.name)).load(p)


def stratified_split(x: torch.Tensor, y: torch.Tensor, test_fraction: float,
                     classes: tuple[str, ...]) -> Split:
    """A fixed split of one pool of images, each class in proportion (seed 0, whatever the run's)."""
    from sklearn.model_selection import train_test_split

    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=0,
                                           stratify=y.numpy())
    return Split(x[idx_train], y[idx_train], x[idx_test], y[idx_test], classes)


def to_nchw_uint8(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Resize uint8 NCHW images to ``size`` x ``size`` and convert to ``channels``."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 NCHW images, got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] != channels:
        if channels == 3 and images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        elif channels == 1 and images.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise ValueError(f"cannot convert {images.shape[1]} channels to {channels}")
    if images.shape[-2:] != (size, size):
        x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
        images = x.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def _limit(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep ``n`` examples in a fixed, class-interleaved order (independent of ``seed``)."""
    if n is None or n >= len(y):
        return x, y
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:n]
    order = order.sort().values
    return x[order], y[order]


def prepare(split: Split, p: DataParams) -> Split:
    """Apply the profile's size, channel and subset settings to a raw split."""
    x_tr, y_tr = _limit(split.x_train, split.y_train, p.train_limit)
    x_te, y_te = _limit(split.x_test, split.y_test, p.test_limit)
    return Split(
        x_train=to_nchw_uint8(x_tr, p.image_size, p.channels),
        y_train=y_tr.to(torch.int64),
        x_test=to_nchw_uint8(x_te, p.image_size, p.channels),
        y_test=y_te.to(torch.int64),
        classes=split.classes,
    )


def load_split(p: DataParams) -> Split:
    """Load the dataset ``p.name`` and normalise it to the profile's format."""
    return prepare(load_raw(p), p)
