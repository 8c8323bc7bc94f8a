"""The forward and backward passes a stage makes through its networks, and their compute bound.

With ``REPURIFY_PASSES=1`` in the environment, every outermost call of a counted network (a
:class:`Counted` module: the classifiers, the purifiers, and the feature and detector networks
of their losses, and OAG's calibration synthesis) is counted by its input's shape and device,
grad mode and BPDA state, and every backward through its output likewise. At the end of the
stage :func:`bound_seconds` times each counted call kind alone, on random inputs of the same
shape on the same device (ours: batch sizes interpolated linearly between the powers of two
and the largest batch measured), and sums count x cost: the time the stage's network
arithmetic needs, with nothing else around it. The stage's wall time over that bound is its
distance from the compute bound.

Counting keeps every counted module alive until the stage ends. Off (the default), a counted
call costs one attribute lookup.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

ENV = "REPURIFY_PASSES"
MIN_SECONDS = 0.05  # ours: each timed call kind repeats until this much time, at most REPEATS runs
REPEATS = 5


class Call(NamedTuple):
    """One kind of counted call: the module, its input's shape, dtype and device, and the grad
    state."""

    module: int  # id() of the module, whose object :class:`Passes` keeps
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device  # the input's: a module without weights (JPEG, OAG) has no other
    grad: bool  # torch.is_grad_enabled()
    input_grad: bool  # the input required a gradient (an attack)
    weights_grad: bool  # the module's parameters did (a training step)
    bpda: bool

    def kind(self) -> Call:
        """The call with its batch size dropped: the calls timed together."""
        return self._replace(shape=self.shape[1:])


@dataclass
class Passes:
    """The counts of one process; :func:`active` returns it while counting is on."""

    forward: Counter[Call] = field(default_factory=Counter)
    backward: Counter[Call] = field(default_factory=Counter)
    modules: dict[int, nn.Module] = field(default_factory=dict)
    depth: int = 0  # >0 inside a counted call: nested counted calls are part of the outer one

    def images(self, counts: Counter[Call]) -> int:
        return sum(c.shape[0] * n for c, n in counts.items())


_PASSES: Passes | None = Passes() if os.environ.get(ENV) == "1" else None


def active() -> Passes | None:
    return _PASSES


@contextlib.contextmanager
def counting(on: bool = True) -> Iterator[Passes | None]:
    """Within this block, count into fresh :class:`Passes` (``on``) or not at all."""
    global _PASSES
    was, _PASSES = _PASSES, Passes() if on else None
    try:
        yield _PASSES
    finally:
        _PASSES = was


class Counted(nn.Module):
    """A network whose outermost calls :mod:`repurify.passes` counts."""

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        p = _PASSES
        if p is None or p.depth or not isinstance(x, torch.Tensor):
            return super().__call__(x, *args, **kwargs)
        from repurify.defenses.base import bpda_enabled  # the purifiers import this module

        call = Call(id(self), tuple(x.shape), x.dtype, x.device, torch.is_grad_enabled(), x.requires_grad,
                    any(w.requires_grad for w in self.parameters()), bpda_enabled())
        p.depth += 1
        try:
            out = super().__call__(x, *args, **kwargs)
        finally:
            p.depth -= 1
        p.forward[call] += 1
        p.modules[call.module] = self
        # an identity returns its input, whose hooks would pile up over calls: no backward to count
        if isinstance(out, torch.Tensor) and out.requires_grad and out is not x:
            out.register_hook(lambda g: p.backward.update((call,)))
        return out


def _seconds(run: Any) -> float:
    """The fastest of a few runs of ``run`` after one warm-up (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    run()
    sync()
    best, spent = float("inf"), 0.0
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        sync()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent >= MIN_SECONDS:
            break
    return best


def _cost(module: nn.Module, kind: Call, batch: int, backward: bool) -> float:
    """Seconds of one call of ``kind`` at ``batch`` rows, forward or forward+backward."""
    from repurify.defenses.base import bpda

    x = torch.rand((batch, *kind.shape), dtype=kind.dtype, device=kind.device)
    # the input needs a gradient for a backward through frozen weights
    x.requires_grad_(kind.input_grad or (backward and not kind.weights_grad))
    weights = list(module.parameters())
    frozen = [w.requires_grad for w in weights]

    def run() -> None:
        with torch.set_grad_enabled(kind.grad or backward), bpda(kind.bpda):
            out = module(x)
            if backward:
                out.backward(torch.ones_like(out))

    try:
        for w in weights:
            w.requires_grad_(kind.weights_grad)
        return _seconds(run)
    finally:
        for w, g in zip(weights, frozen, strict=True):
            w.requires_grad_(g)


def _sizes(largest: int) -> list[int]:
    """The batch sizes timed: the powers of two below ``largest``, and ``largest``."""
    return sorted({*(2 ** k for k in range(largest.bit_length()) if 2 ** k < largest), largest})


def _interpolate(costs: dict[int, float], batch: int) -> float:
    sizes = sorted(costs)
    hi = next(s for s in sizes if s >= batch)
    lo = max((s for s in sizes if s <= batch), default=hi)
    if hi == lo:
        return costs[hi]
    return costs[lo] + (batch - lo) / (hi - lo) * (costs[hi] - costs[lo])


def bound_seconds(p: Passes) -> float:
    """Sum of count x the time of each counted call alone (forward, and backward through it)."""
    kinds: dict[Call, list[Call]] = {}
    for call in p.forward:
        kinds.setdefault(call.kind(), []).append(call)
    total = 0.0
    with counting(False):  # the timing's own calls are not counted
        for kind, calls in kinds.items():
            module = p.modules[kind.module]
            sizes = _sizes(max(c.shape[0] for c in calls))
            forward = {b: _cost(module, kind, b, False) for b in sizes}
            both = ({b: _cost(module, kind, b, True) for b in sizes}
                    if any(c in p.backward for c in calls) else {})
            for c in calls:
                f = _interpolate(forward, c.shape[0])
                total += p.forward[c] * f
                if c in p.backward:  # the backward alone: forward+backward less the forward
                    total += p.backward[c] * max(_interpolate(both, c.shape[0]) - f, 0.0)
    return total


def metrics(p: Passes) -> dict[str, float]:
    """The MLflow metrics of a stage's counts and their bound (timed now)."""
    return {"passes.forward_images": p.images(p.forward), "passes.backward_images": p.images(p.backward),
            "stage.bound_seconds": bound_seconds(p)}
