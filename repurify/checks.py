"""Gradient-masking probes on one defended model (Carlini et al. 2019, Sec. 5; AutoAttack's
``checks.py``): the evidence that :mod:`repurify.masking` weighs.

* ``eps_sweep``: the white-box attack of ``evaluation.checks`` (BPDA at non-differentiable
  layers, EOT over a randomized purifier) at every eps, its step size scaled with eps. The last
  eps is unbounded, where every defense must fall to ~0. Each point keeps the accuracy after
  every iteration (``iterations[k]``: after k steps; with early stopping an example counts as
  fooled from the first iterate that fooled it).
* ``square``: Square (Andriushchenko et al. 2020), gradient-free, at the attack's eps.
* ``zero_gradient``: the fraction of images whose input gradient is exactly zero, through the
  attack's gradients (``adaptive``) and through the layers' true gradients (``autograd``).
* ``randomness``: whether two purifications of the same images differ, beside what the purifier
  declares.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from repurify.attacks import run_attack
from repurify.defenses import EOT, DefendedModel, bpda
from repurify.evaluation import agreement, predict
from repurify.params import AutoAttackSpec, ChecksParams


def eps_sweep(defended: DefendedModel, spec: Any, checks: ChecksParams, x: torch.Tensor,
              y: torch.Tensor, *, num_classes: int, batch_size: int, eot_samples: int,
              seed: int) -> list[dict[str, Any]]:
    """One point per eps: final accuracy and the accuracy after each iteration."""
    attacked = EOT(defended, eot_samples) if defended.randomized else defended
    ratio = spec.step_size / spec.eps
    points = []
    for eps in tqdm(checks.eps, desc="eps sweep", disable=None, leave=False):
        update = {"eps": eps, "step_size": ratio * eps, "steps": checks.steps}
        swept = spec.model_copy(update=update | ({"restarts": 1} if spec.kind == "pgd" else {}))
        trace: list[int] = []
        with bpda(True):
            adv, _ = run_attack(swept, attacked, x, y.to(x.device), num_classes=num_classes,
                                batch_size=batch_size, seed=seed, early_stop=not defended.randomized,
                                trace=trace)
        final = agreement(predict(defended, adv, batch_size), y)
        curve = [c / len(y) for c in trace] + [0.0] * (checks.steps - len(trace))
        points.append({"eps": eps, "step_size": ratio * eps, "accuracy": final,
                       "iterations": [*curve, final]})
    return points


def square(defended: DefendedModel, spec: Any, queries: int, x: torch.Tensor, y: torch.Tensor, *,
           num_classes: int, batch_size: int, seed: int) -> dict[str, Any]:
    """Square at the attack's eps with ``queries`` queries: accuracy of the defended model."""
    sq = AutoAttackSpec(kind="autoattack", eps=spec.eps, norm=spec.norm, version="custom",
                        attacks=["square"], n_queries=queries)
    adv, _ = run_attack(sq, defended, x, y.to(x.device), num_classes=num_classes,
                        batch_size=batch_size, seed=seed, early_stop=False)
    return {"eps": spec.eps, "queries": queries,
            "accuracy": agreement(predict(defended, adv, batch_size), y)}


def zero_gradient_fraction(defended: DefendedModel, x: torch.Tensor, y: torch.Tensor, *,
                           adaptive: bool, batch_size: int) -> float:
    """Share of images whose cross-entropy input gradient is exactly zero."""
    zero = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].detach().requires_grad_(True)
        with bpda(adaptive):
            loss = F.cross_entropy(defended(xb), y[i:i + batch_size].to(x.device), reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
        zero += int((grad.flatten(1).abs().sum(1) == 0).sum())
    return zero / len(x)


def randomness(defended: DefendedModel, x: torch.Tensor) -> dict[str, Any]:
    """Purify the same images twice: do the outputs differ?"""
    with torch.no_grad():
        first, second = defended.purifier(x), defended.purifier(x)
    return {"declared": defended.randomized, "detected": not torch.equal(first, second),
            "max_abs_difference": float((first - second).abs().max())}


def probe(defended: DefendedModel, checks: ChecksParams, spec: Any, x: torch.Tensor, y: torch.Tensor,
          *, num_classes: int, batch_size: int, eot_samples: int, seed: int) -> dict[str, Any]:
    """Every probe on the first ``checks.n`` images (``x`` on the model's device, ``y`` on the CPU)."""
    x, y = x[:checks.n], y[:checks.n]
    kw = {"num_classes": num_classes, "batch_size": batch_size, "seed": seed}
    gradients = {"adaptive": zero_gradient_fraction(defended, x, y, adaptive=True, batch_size=batch_size)}
    if not defended.purifier.differentiable:
        gradients["autograd"] = zero_gradient_fraction(defended, x, y, adaptive=False,
                                                       batch_size=batch_size)
    return {
        "attack": checks.attack, "kind": spec.kind, "norm": spec.norm, "n": len(y),
        "attack_eps": spec.eps, "steps": checks.steps,
        "eot_samples": eot_samples if defended.randomized else 1,
        "randomness": randomness(defended, x[:batch_size]),
        "zero_gradient": gradients,
        "eps_sweep": eps_sweep(defended, spec, checks, x, y, eot_samples=eot_samples, **kw),
        "square": square(defended, spec, checks.square_queries, x, y, **kw) if checks.square_queries
        else None,
    }
