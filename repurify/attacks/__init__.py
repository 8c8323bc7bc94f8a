"""Attacks over any classifier on [0,1] pixels, selected by the ``kind`` of a params entry."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from repurify.attacks.autoattack import autoattack
from repurify.attacks.base import AttackValidityError, Goal, check_adversarial, choose_targets
from repurify.attacks.cw import cw_l2
from repurify.attacks.gradient import bim, fgsm, mifgsm, pgd

__all__ = ["ATTACKS", "AttackValidityError", "Goal", "check_adversarial", "run_attack"]

ATTACKS: dict[str, Callable[..., torch.Tensor]] = {
    "fgsm": fgsm,
    "bim": bim,
    "pgd": pgd,
    "mifgsm": mifgsm,
    "cw_l2": cw_l2,
    "autoattack": autoattack,
}


def run_attack(spec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, num_classes: int,
               batch_size: int, seed: int, early_stop: bool,
               target_model: nn.Module | None = None, samples: int = 1, keep_best: bool = False,
               trace: list[torch.Tensor] | None = None,
               restart_trace: list[torch.Tensor] | None = None,
               notes: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attack ``model`` batch by batch; returns (x_adv, targets or None), validated.

    ``samples`` > 1: ``model`` is randomized; gradients are EOT means over that many draws and
    success is judged on the draws (see :func:`repurify.attacks.gradient.iterative`).
    ``keep_best``: return each example's best iterate (lowest multi-draw accuracy, then highest
    loss) rather than the last. ``target_model`` picks least-likely targets (defaults to ``model``);
    ``trace`` collects, per iteration, which examples are not yet fooled (BIM, PGD; see
    :mod:`repurify.attacks.gradient`), ``restart_trace`` the same after each PGD restart, ``notes``
    AutoAttack's own warnings.
    """
    gen = torch.Generator().manual_seed(seed)
    kwargs = spec.model_dump(exclude={"kind", "targeted", "threat_models", "n"})
    labels = y.clone()
    advs, targets = [], []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        tb = choose_targets(target_model or model, xb, yb, spec.targeted, num_classes, gen)
        adv = ATTACKS[spec.kind](model, xb, Goal(yb, tb), early_stop=early_stop, gen=gen,
                                 seed=seed, samples=samples, keep_best=keep_best, trace=trace,
                                 restart_trace=restart_trace, notes=notes, **kwargs)
        advs.append(adv)
        if tb is not None:
            targets.append(tb)
    x_adv = torch.cat(advs)
    check_adversarial(x, x_adv, labels, y, spec.norm, getattr(spec, "eps", None), spec.kind)
    return x_adv, (torch.cat(targets) if targets else None)
