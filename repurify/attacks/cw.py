"""Carlini & Wagner L2 (2017): ``min ||x' - x||_2^2 + c * f(x')`` in tanh space, binary search on c."""

from __future__ import annotations

import torch
from torch import nn

from repurify.attacks.base import Goal


def _margin(logits: torch.Tensor, goal: Goal, kappa: float) -> torch.Tensor:
    """f(x') of C&W Eq. (objective 6), clamped at -kappa: equal to -kappa exactly when the goal is
    met with margin kappa (over the last dimension, so logits may carry a leading draw axis)."""
    if goal.target is None:
        label, sign = goal.y, 1.0
    else:
        label, sign = goal.target, -1.0
    index = label.view(-1, 1).expand(*logits.shape[:-1], 1)
    real = logits.gather(-1, index).squeeze(-1)
    other = logits.scatter(-1, index, float("-inf")).amax(-1)
    return (sign * (real - other)).clamp_min(-kappa)


def _met(logits: torch.Tensor, goal: Goal, kappa: float) -> torch.Tensor:
    """Goal met with margin kappa (kappa 0: the prediction itself), in every draw (S x N x C)."""
    met = _margin(logits, goal, kappa) <= -kappa if kappa > 0 else goal.achieved(logits)
    return met.all(0)


def cw_l2(model: nn.Module, x: torch.Tensor, goal: Goal, *, steps: int, lr: float,
          binary_search_steps: int, initial_c: float, confidence: float, samples: int = 1,
          **_: object) -> torch.Tensor:
    """Smallest-L2 adversarial found per example; the clean image where none was found.

    Against a randomized model (``samples`` > 1) f is averaged over the draws and an iterate
    counts as a success only if it meets the goal, with the margin, in every draw."""
    x = x.detach()
    n = len(x)
    lower = torch.zeros(n, device=x.device)
    upper = torch.full((n,), 1e10, device=x.device)
    c = torch.full((n,), initial_c, device=x.device)
    best_l2 = torch.full((n,), float("inf"), device=x.device)
    best = x.clone()
    w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    for _ in range(binary_search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(steps):
            x_adv = (torch.tanh(w) + 1) / 2
            logits = torch.stack([model(x_adv) for _ in range(samples)])
            l2 = (x_adv - x).flatten(1).pow(2).sum(1)
            loss = (l2 + c * _margin(logits, goal, confidence).mean(0)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                ok = _met(logits, goal, confidence)
                better = ok & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best[better] = x_adv.detach()[better]
                succeeded |= ok
        # binary search: shrink c where we succeeded, grow it where we did not
        upper = torch.where(succeeded, torch.minimum(upper, c), upper)
        lower = torch.where(succeeded, lower, torch.maximum(lower, c))
        c = torch.where(upper < 1e9, (lower + upper) / 2, c * 10)
    return best.clamp(0, 1)
