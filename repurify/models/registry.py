"""Architectures by name: ``build_model("resnet18_cifar", in_channels=3, ...)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

Builder = Callable[[int, int, int], nn.Module]  # (in_channels, num_classes, image_size)
MODELS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Add an architecture builder to :data:`MODELS`."""

    def deco(fn: Builder) -> Builder:
        if name in MODELS:
            raise KeyError(f"architecture {name!r} registered twice")
        MODELS[name] = fn
        return fn

    return deco


def build_model(arch: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Instantiate ``arch``; unknown names raise ``KeyError`` listing the choices."""
    if arch not in MODELS:
        raise KeyError(f"unknown architecture {arch!r}; choose one of {sorted(MODELS)}")
    return MODELS[arch](in_channels, num_classes, image_size)
