"""Gradient-sign attacks: FGSM, BIM/I-FGSM, PGD (Madry, random start) and MI-FGSM.

All share one loop: ``x_{t+1} = Proj_{B(x, eps)}(x_t + alpha * dir(g_t))`` with
``dir`` the sign (L-inf) or the normalised gradient (L2). MI-FGSM (Dong et al.
2018) accumulates ``g_t = mu * g_{t-1} + grad / ||grad||_1``. With
``early_stop`` an example stops being updated once its goal is met (its
successful iterate is kept), which only ever lowers robust accuracy. A
``trace`` list receives, per iteration ``t``, a per-example tensor (concatenated over batches):
1 where the goal was met at no iterate up to ``x_t``, else 0 (a multi-draw accuracy for a
randomized model); its mean is the accuracy of the same attack stopped after ``t`` steps.

Against a randomized model (``samples`` > 1) ``g_t`` is the EOT mean of the per-draw loss
gradients, and success is judged on those draws: an example's accuracy is the share of draws that
still classify it correctly. ``keep_best`` returns, per example, the iterate with the lowest such
accuracy (ties: the highest mean loss), the final iterate included.
"""

from __future__ import annotations

import torch
from torch import nn

from repurify.attacks.base import (
    Goal,
    Norm,
    draw_logits,
    input_gradient,
    project,
    random_start,
    steepest_step,
)


class _Best:
    """Per example, the candidate with the lowest multi-draw accuracy, then the highest loss."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.clone()
        self.missed = torch.full((len(x),), float("inf"), dtype=torch.float64, device=x.device)
        self.loss = torch.full((len(x),), -float("inf"), device=x.device)

    def offer(self, idx: torch.Tensor, x: torch.Tensor, goal: Goal, draws: torch.Tensor) -> None:
        missed = goal.missed(draws)
        loss = torch.stack([goal.loss(d) for d in draws]).mean(0)
        better = (missed < self.missed[idx]) | ((missed == self.missed[idx]) & (loss > self.loss[idx]))
        pick = idx[better]
        self.x[pick], self.missed[pick], self.loss[pick] = x[better], missed[better], loss[better]


def iterative(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: Norm,
              eps: float | torch.Tensor, step_size: float | torch.Tensor, steps: int,
              rand_init: bool, momentum: float | None, early_stop: bool,
              gen: torch.Generator, trace: list[torch.Tensor] | None = None, samples: int = 1,
              keep_best: bool = False) -> torch.Tensor:
    """The shared sign-gradient loop; returns adversarial examples in [0,1].

    ``eps`` and ``step_size`` may be per-example tensors (shape N,1,1,1) for L-inf without
    random start or early stopping (HGD's training set draws one eps per image).
    """
    x = x.detach()
    delta = random_start(x, norm, eps, gen) if rand_init else torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)
    velocity = torch.zeros_like(x)
    active = torch.arange(len(x), device=x.device)
    best = _Best(x_adv) if keep_best else None
    lowest = torch.ones(len(x), dtype=torch.float64, device=x.device)  # multi-draw accuracy so far
    curve: list[torch.Tensor] = []
    for _ in range(steps):
        if active.numel() == 0:
            break
        xa, sub = x_adv[active], goal.subset(active)
        grad, draws = input_gradient(model, xa, sub, samples)
        missed = sub.missed(draws)
        if best is not None:
            best.offer(active, xa, sub, draws)
        lowest[active] = torch.minimum(lowest[active], missed)
        if trace is not None:
            curve.append(lowest.clone())
        if early_stop:
            keep = missed > 0
            active, xa, grad = active[keep], xa[keep], grad[keep]
            if active.numel() == 0:
                break
        if momentum is not None:
            l1 = grad.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
            velocity[active] = momentum * velocity[active] + grad / l1
            grad = velocity[active]
        stepped = xa + step_size * steepest_step(grad, norm)
        x_adv[active] = (x[active] + project(stepped - x[active], norm, eps)).clamp(0, 1)
    if trace is not None:
        curve += [lowest] * (steps - len(curve))  # an early end: nothing changes any more
        for t, robust in enumerate(curve):
            _count(trace, t, robust.cpu())
    if best is None:
        return x_adv.detach()
    if active.numel():
        best.offer(active, x_adv[active], goal.subset(active), draw_logits(model, x_adv[active], samples))
    return best.x


def _count(trace: list[torch.Tensor], t: int, robust: torch.Tensor) -> None:
    """Append one batch's per-example values to entry ``t`` of ``trace``."""
    if len(trace) == t:
        trace.append(robust)
    else:
        trace[t] = torch.cat([trace[t], robust])


def fgsm(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: Norm, eps: float,
         gen: torch.Generator, samples: int = 1, **_: object) -> torch.Tensor:
    """One step of size eps (Goodfellow et al. 2015): FGSM for L-inf, FGM for L2."""
    return iterative(model, x, goal, norm=norm, eps=eps, step_size=eps, steps=1, rand_init=False,
                     momentum=None, early_stop=False, gen=gen, samples=samples)


def bim(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: Norm, eps: float, step_size: float,
        steps: int, early_stop: bool, gen: torch.Generator, trace: list[torch.Tensor] | None = None,
        samples: int = 1, keep_best: bool = False, **_: object) -> torch.Tensor:
    """BIM / I-FGSM (Kurakin et al. 2017): iterated FGSM from the clean image."""
    return iterative(model, x, goal, norm=norm, eps=eps, step_size=step_size, steps=steps,
                     rand_init=False, momentum=None, early_stop=early_stop, gen=gen, trace=trace,
                     samples=samples, keep_best=keep_best)


def pgd(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: Norm, eps: float, step_size: float,
        steps: int, restarts: int, early_stop: bool, gen: torch.Generator,
        trace: list[torch.Tensor] | None = None, restart_trace: list[torch.Tensor] | None = None,
        samples: int = 1, keep_best: bool = False, **_: object) -> torch.Tensor:
    """PGD (Madry et al. 2018): random start in the ball; per example the best of ``restarts``
    runs, judged on the multi-draw accuracy (then the loss). A restart attacks only the examples
    no earlier run fooled in every draw; ``trace`` follows the first run, ``restart_trace`` gets
    the per-example multi-draw accuracy of the best candidate after each restart."""
    best = _Best(x)
    pending = torch.arange(len(x), device=x.device)
    for restart in range(restarts):
        if pending.numel():
            sub = goal.subset(pending)
            adv = iterative(model, x[pending], sub, norm=norm, eps=eps, step_size=step_size,
                            steps=steps, rand_init=True, momentum=None, early_stop=early_stop,
                            gen=gen, trace=trace if restart == 0 else None, samples=samples,
                            keep_best=keep_best)
            best.offer(pending, adv, sub, draw_logits(model, adv, samples))
            pending = pending[best.missed[pending] > 0]
        if restart_trace is not None:
            _count(restart_trace, restart, best.missed.cpu())
    return best.x


def mifgsm(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: Norm, eps: float,
           step_size: float, steps: int, decay: float, early_stop: bool, gen: torch.Generator,
           samples: int = 1, keep_best: bool = False, **_: object) -> torch.Tensor:
    """MI-FGSM (Dong et al. 2018) with decay factor ``mu``."""
    return iterative(model, x, goal, norm=norm, eps=eps, step_size=step_size, steps=steps,
                     rand_init=False, momentum=decay, early_stop=early_stop, gen=gen,
                     samples=samples, keep_best=keep_best)
