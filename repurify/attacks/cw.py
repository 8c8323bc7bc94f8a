"""Carlini & Wagner L2 (2017): ``min ||x' - x||_2^2 + c * f(x')`` in tanh space, binary search on c."""

from __future__ import annotations

import torch
from torch import nn

from repurify.attacks.base import Goal


def _margin(logits: torch.Tensor, goal: Goal, kappa: float) -> torch.Tensor:
    """f(x') of C&W Eq. (objective 6): <= 0 exactly when the goal is met with margin kappa."""
    if goal.target is None:
        label, sign = goal.y, 1.0
    else:
        label, sign = goal.target, -1.0
    real = logits.gather(1, label.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, label.view(-1, 1), float("-inf")).amax(1)
    return (sign * (real - other)).clamp_min(-kappa)


def cw_l2(model: nn.Module, x: torch.Tensor, goal: Goal, *, steps: int, lr: float,
          binary_search_steps: int, initial_c: float, confidence: float,
          **_: object) -> torch.Tensor:
    """Smallest-L2 adversarial found per example; the clean image where none was found."""
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
            logits = model(x_adv)
            l2 = (x_adv - x).flatten(1).pow(2).sum(1)
            loss = (l2 + c * _margin(logits, goal, confidence)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                ok = _margin(logits, goal, confidence) <= 0 if confidence > 0 else goal.achieved(logits)
                better = ok & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best[better] = x_adv.detach()[better]
                succeeded |= ok
        # binary search: shrink c where we succeeded, grow it where we did not
        upper = torch.where(succeeded, torch.minimum(upper, c), upper)
        lower = torch.where(succeeded, lower, torch.maximum(lower, c))
        c = torch.where(upper < 1e9, (lower + upper) / 2, c * 10)
    return best.clamp(0, 1)
