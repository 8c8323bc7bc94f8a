"""Shared pieces of the attacks: budgets, projections, target selection, validity checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from repurify.errors import RepurifyError

Norm = Literal["linf", "l2"]
Targeting = Literal["none", "random", "least_likely"]


class AttackValidityError(RepurifyError):
    """An adversarial batch left its norm ball, the pixel range, or changed its labels."""


@dataclass(frozen=True)
class Goal:
    """What the attacker wants: move away from ``y`` or towards ``target``."""

    y: torch.Tensor
    target: torch.Tensor | None = None

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-example loss to *ascend*."""
        if self.target is None:
            return F.cross_entropy(logits, self.y, reduction="none")
        return -F.cross_entropy(logits, self.target, reduction="none")

    def achieved(self, logits: torch.Tensor) -> torch.Tensor:
        pred = logits.argmax(-1)
        return pred != self.y if self.target is None else pred == self.target

    def missed(self, draws: torch.Tensor) -> torch.Tensor:
        """Per example, the share of draws (logits of shape S x N x C) in which the goal is *not*
        met: the multi-draw estimate that judges success against a randomized model (0 or 1 for
        a deterministic one)."""
        return (~self.achieved(draws)).double().mean(0)

    def subset(self, idx: torch.Tensor) -> Goal:
        return Goal(self.y[idx], None if self.target is None else self.target[idx])


def choose_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, how: Targeting,
                   num_classes: int, gen: torch.Generator) -> torch.Tensor | None:
    """Target labels: uniformly random among the wrong classes, or the least likely class."""
    if how == "none":
        return None
    if how == "random":
        shift = torch.randint(1, num_classes, y.shape, generator=gen).to(y.device)
        return (y + shift) % num_classes
    with torch.no_grad():
        logits = model(x)
    logits = logits.scatter(1, y.view(-1, 1), float("inf"))
    return logits.argmin(1)


def project(delta: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """Project perturbations onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (eps / flat).clamp(max=1.0)
    return delta * factor.view(-1, *([1] * (delta.ndim - 1)))


def steepest_step(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Unit-norm ascent direction: the sign for L-inf, the normalised gradient for L2."""
    if norm == "linf":
        return grad.sign()
    g = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / g.view(-1, *([1] * (grad.ndim - 1)))


def random_start(x: torch.Tensor, norm: Norm, eps: float, gen: torch.Generator) -> torch.Tensor:
    """A uniform point of the L-inf ball, or a uniform point of the L2 ball."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=gen).to(x.device)
        return (2 * u - 1) * eps
    d = torch.randn(x.shape, generator=gen).to(x.device)
    d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
    r = torch.rand(x.shape[0], generator=gen).to(x.device) ** (1.0 / x[0].numel())
    return d * (eps * r).view(-1, *([1] * (x.ndim - 1)))


STACKED_VALUES = 2**20  # ours: the input values one call of stacked draws may hold (4 MB in float32)


def draws_per_call(model: nn.Module, x: torch.Tensor, samples: int) -> int:
    """How many of ``samples`` draws of ``x`` one forward pass takes: one, or, for a model that
    draws its randomness row by row (``independent_rows``), as many as fit ``STACKED_VALUES``
    input values (at least one)."""
    if samples == 1 or not getattr(model, "independent_rows", False) or not len(x):
        return 1
    return max(1, min(samples, STACKED_VALUES // x.numel()))


def draw_chunks(model: nn.Module, x: torch.Tensor, samples: int) -> Iterator[torch.Tensor]:
    """The logits of ``samples`` draws of ``x``, ``k`` stacked draws a call (shape k x N x C)."""
    per_call = draws_per_call(model, x, samples)
    for start in range(0, samples, per_call):
        k = min(per_call, samples - start)
        logits = model(x if k == 1 else x.repeat(k, *([1] * (x.ndim - 1))))
        yield logits.view(k, len(x), *logits.shape[1:])


def input_gradient(model: nn.Module, x: torch.Tensor, goal: Goal,
                   samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """EOT gradient: the mean over ``samples`` draws of each draw's loss gradient w.r.t. ``x``
    (Athalye et al. 2018, Eq. 4; one draw for a deterministic model), and the draws' logits
    (shape ``samples x N x C``)."""
    x = x.detach().requires_grad_(True)
    grad, draws = torch.zeros_like(x), []
    for logits in draw_chunks(model, x, samples):
        loss = sum(goal.loss(drawn).sum() for drawn in logits)
        if loss.requires_grad:  # else the model cut the graph (a detached purifier): gradient 0
            grad += torch.autograd.grad(loss, x)[0] / samples
        draws.append(logits.detach())
    return grad, torch.cat(draws)


def draw_logits(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """``samples`` forward passes without gradients: logits of shape ``samples x N x C``."""
    with torch.no_grad():
        return torch.cat(list(draw_chunks(model, x, samples)))


def perturbation_norm(x: torch.Tensor, x_adv: torch.Tensor, norm: Norm) -> torch.Tensor:
    d = (x_adv - x).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def check_adversarial(x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, y_adv: torch.Tensor,
                      norm: Norm, eps: float | None, name: str, tol: float = 1e-6) -> None:
    """Fail unless every example is in its ball (within ``tol``), in [0,1], and its label ``y_adv``
    after the attack is still the label ``y`` it was given (a copy taken before the attack)."""
    if x_adv.shape != x.shape:
        raise AttackValidityError(f"{name}: shape {tuple(x_adv.shape)} != {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise AttackValidityError(f"{name}: non-finite pixels")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < -tol or hi > 1 + tol:
        raise AttackValidityError(f"{name}: pixels outside [0,1] (min {lo:.6g}, max {hi:.6g})")
    if not torch.equal(y, y_adv):
        raise AttackValidityError(f"{name}: labels changed")
    if eps is not None:
        worst = float(perturbation_norm(x, x_adv, norm).max())
        if worst > eps + tol:
            raise AttackValidityError(
                f"{name}: perturbation {norm} norm {worst:.8g} exceeds eps {eps:.8g} (+{tol:g})")
