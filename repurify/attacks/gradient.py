"""Gradient-sign attacks: FGSM, BIM/I-FGSM, PGD (Madry, random start) and MI-FGSM.

All share one loop: ``x_{t+1} = Proj_{B(x, eps)}(x_t + alpha * dir(g_t))`` with
``dir`` the sign (L-inf) or the normalised gradient (L2). MI-FGSM (Dong et al.
2018) accumulates ``g_t = mu * g_{t-1} + grad / ||grad||_1``. With
``early_stop`` an example stops being updated once its goal is met (its
successful iterate is kept), which only ever lowers robust accuracy. A
``trace`` list receives, per iteration, how many examples have not yet met the
goal (with early stopping: at no iterate so far), summed over batches.
"""

from __future__ import annotations

import torch
from torch import nn

from repurify.attacks.base import Goal, Norm, input_gradient, project, random_start, steepest_step


def iterative(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: Norm,
              eps: float | torch.Tensor, step_size: float | torch.Tensor, steps: int,
              rand_init: bool, momentum: float | None, early_stop: bool,
              gen: torch.Generator, trace: list[int] | None = None) -> torch.Tensor:
    """The shared sign-gradient loop; returns adversarial examples in [0,1].

    ``eps`` and ``step_size`` may be per-example tensors (shape N,1,1,1) for L-inf without
    random start or early stopping (HGD's training set draws one eps per image).
    """
    x = x.detach()
    delta = random_start(x, norm, eps, gen) if rand_init else torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)
    velocity = torch.zeros_like(x)
    active = torch.arange(len(x), device=x.device)
    for t in range(steps):
        if active.numel() == 0:
            break
        xa, sub = x_adv[active], goal.subset(active)
        grad, logits = input_gradient(model, xa, sub)
        keep = ~sub.achieved(logits)
        if trace is not None:
            _count(trace, t, int(keep.sum()))
        if early_stop:
            active, xa, grad = active[keep], xa[keep], grad[keep]
            if active.numel() == 0:
                break
        if momentum is not None:
            l1 = grad.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
            velocity[active] = momentum * velocity[active] + grad / l1
            grad = velocity[active]
        stepped = xa + step_size * steepest_step(grad, norm)
        x_adv[active] = (x[active] + project(stepped - x[active], norm, eps)).clamp(0, 1)
    return x_adv.detach()


def _count(trace: list[int], t: int, robust: int) -> None:
    if len(trace) == t:
        trace.append(0)
    trace[t] += robust


def fgsm(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: Norm, eps: float,
         gen: torch.Generator, **_: object) -> torch.Tensor:
    """One step of size eps (Goodfellow et al. 2015): FGSM for L-inf, FGM for L2."""
    return iterative(model, x, goal, norm=norm, eps=eps, step_size=eps, steps=1, rand_init=False,
                     momentum=None, early_stop=False, gen=gen)


def bim(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: Norm, eps: float, step_size: float,
        steps: int, early_stop: bool, gen: torch.Generator, trace: list[int] | None = None,
        **_: object) -> torch.Tensor:
    """BIM / I-FGSM (Kurakin et al. 2017): iterated FGSM from the clean image."""
    return iterative(model, x, goal, norm=norm, eps=eps, step_size=step_size, steps=steps,
                     rand_init=False, momentum=None, early_stop=early_stop, gen=gen, trace=trace)


def pgd(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: Norm, eps: float, step_size: float,
        steps: int, restarts: int, early_stop: bool, gen: torch.Generator,
        trace: list[int] | None = None, **_: object) -> torch.Tensor:
    """PGD (Madry et al. 2018): random start in the ball; the best of ``restarts`` runs
    (``trace`` follows the first run)."""
    best = x.clone()
    pending = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for restart in range(restarts):
        idx = pending.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        adv = iterative(model, x[idx], goal.subset(idx), norm=norm, eps=eps, step_size=step_size,
                        steps=steps, rand_init=True, momentum=None, early_stop=early_stop, gen=gen,
                        trace=trace if restart == 0 else None)
        best[idx] = adv
        with torch.no_grad():
            pending[idx] = ~goal.subset(idx).achieved(model(adv))
    return best


def mifgsm(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: Norm, eps: float,
           step_size: float, steps: int, decay: float, early_stop: bool, gen: torch.Generator,
           **_: object) -> torch.Tensor:
    """MI-FGSM (Dong et al. 2018) with decay factor ``mu``."""
    return iterative(model, x, goal, norm=norm, eps=eps, step_size=step_size, steps=steps,
                     rand_init=False, momentum=decay, early_stop=early_stop, gen=gen)
