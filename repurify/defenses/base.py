"""The defense interface: a purifier in front of a frozen classifier.

A :class:`Purifier` maps [0,1] pixels to [0,1] pixels and declares whether it
is ``differentiable`` and ``randomized``. Non-differentiable steps (rounding,
JPEG, deadzones) go through :func:`nondifferentiable`, whose backward pass is
the true (zero) gradient by default and the identity under :func:`bpda`
(Athalye et al. 2018, BPDA applied at the layer, not to the whole defense).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn

from repurify.passes import Counted

_state = threading.local()


def bpda_enabled() -> bool:
    return getattr(_state, "bpda", False)


@contextlib.contextmanager
def bpda(enabled: bool = True) -> Iterator[None]:
    """Within this block, non-differentiable layers back-propagate as the identity."""
    previous = bpda_enabled()
    _state.bpda = enabled
    try:
        yield
    finally:
        _state.bpda = previous


class _NonDifferentiable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.straight_through = bpda_enabled()
        with torch.no_grad():
            return fn(x.detach())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (grad if ctx.straight_through else torch.zeros_like(grad)), None


def nondifferentiable(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` with gradient 0 (its true gradient a.e.), or the identity under :func:`bpda`."""
    return _NonDifferentiable.apply(x, fn)


def straight_through(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a torch-differentiable ``fn`` (rounding, a deadzone) with autograd's own gradient
    (0 for rounding, the 0/1 mask for a deadzone), or the identity gradient under :func:`bpda`."""
    y = fn(x)
    return x + (y - x).detach() if bpda_enabled() else y


class Purifier(Counted):
    """[0,1] images in, [0,1] images out."""

    differentiable: bool = True
    randomized: bool = False
    # its paper attacked it white-box with autograd's gradients at the non-differentiable layers:
    # evaluation adds that protocol's rows beside the adaptive (BPDA) ones
    autograd_protocol: bool = False
    # randomized, and every batch row gets its own draw: EOT and scoring then stack several draws
    # of the same images into one call (the registry's tests check the declaration)
    independent_rows: bool = False


class Identity(Purifier):
    """The `none` defense."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DefendedModel(nn.Module):
    """``classifier(purifier(x))``; the classifier is frozen and normalises internally."""

    def __init__(self, purifier: Purifier, classifier: nn.Module) -> None:
        super().__init__()
        self.purifier = purifier
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)

    @property
    def randomized(self) -> bool:
        return self.purifier.randomized

    @property
    def independent_rows(self) -> bool:
        return self.purifier.independent_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.purifier(x))
