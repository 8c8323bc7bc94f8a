"""Gradient-masking probes on one defended model (Carlini et al. 2019, Sec. 5; AutoAttack's
``checks.py``): the evidence that :mod:`repurify.masking` weighs.

Every probe runs on the adaptive image set (``evaluation.adaptive.n``, the images of the worst
case), and every accuracy keeps its per-image scores (``correct``) so that the verdicts compare
attacks image by image. Randomized defenses are attacked through EOT and scored on fresh draws.

* ``eps_sweep``: the white-box attack of ``evaluation.checks`` (BPDA at non-differentiable
  layers) at every eps, its step size scaled with eps. The last eps is unbounded, where every
  defense must fall to ~0. Each point keeps the accuracy after every iteration (``iterations[k]``:
  after k steps), and at the attack's eps the per-image scores after one step.
* ``square``: Square (Andriushchenko et al. 2020), gradient-free, at the attack's eps; against a
  randomized defense on the mean logits of ``eot_samples`` draws.
* ``zero_gradient``: the share of images whose input gradient is all zero and the share of zero
  gradient entries, through the attack's gradients (``adaptive``) and the layers' true gradients
  (``autograd``); for a randomized defense, ``eot_snr``: how far the EOT gradient stands above
  the noise of its draws.
* ``eot_probe`` (randomized defenses): the attack at its eps with EOT over each listed number of
  draws.
* ``randomness``: whether two purifications of the same images differ, beside what the purifier
  declares.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repurify.attacks import run_attack
from repurify.attacks.base import draw_chunks
from repurify.defenses import DefendedModel, bpda
from repurify.evaluation import Scoring
from repurify.params import AutoAttackSpec, ChecksParams
from repurify.progress import progress
from repurify.scoring import correct, summary


class MeanLogits(nn.Module):
    """The score a query attack sees of a randomized model: mean logits over ``samples`` draws."""

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        self.model, self.samples = model, samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(list(draw_chunks(self.model, x, self.samples))).mean(0)


def _point(defended: nn.Module, adv: torch.Tensor, y: torch.Tensor, scoring: Scoring) -> dict[str, Any]:
    scores = correct(defended, adv, y, draws=scoring.draws, batch_size=scoring.batch_size)
    return {**summary(scores), "correct": scores.tolist()}


def _attack(defended: DefendedModel, spec: Any, x: torch.Tensor, y: torch.Tensor, scoring: Scoring, *,
            num_classes: int, seed: int, samples: int,
            trace: list[torch.Tensor] | None = None) -> torch.Tensor:
    with bpda(True):
        adv, _ = run_attack(spec, defended, x, y.to(x.device), num_classes=num_classes,
                            batch_size=scoring.batch_size, seed=seed,
                            early_stop=not defended.randomized, samples=samples, trace=trace)
    return adv


def _swept(spec: Any, eps: float, steps: int) -> Any:
    update = {"eps": eps, "step_size": spec.step_size / spec.eps * eps, "steps": steps}
    return spec.model_copy(update=update | ({"restarts": 1} if spec.kind == "pgd" else {}))


def eps_sweep(defended: DefendedModel, spec: Any, checks: ChecksParams, x: torch.Tensor,
              y: torch.Tensor, *, num_classes: int, scoring: Scoring, seed: int) -> list[dict[str, Any]]:
    """One point per eps: final accuracy (per image) and the accuracy after each iteration."""
    points = []
    for eps in progress(checks.eps, "eps sweep", "eps"):
        swept, trace = _swept(spec, eps, checks.steps), []
        adv = _attack(defended, swept, x, y, scoring, num_classes=num_classes, seed=seed,
                      samples=scoring.eot_samples, trace=trace)
        point = {"eps": eps, "step_size": swept.step_size, **_point(defended, adv, y, scoring)}
        point["iterations"] = [float(t.mean()) for t in trace] + [point["accuracy"]]
        if len(trace) > 1 and abs(eps - spec.eps) <= 1e-9 * spec.eps:
            point["first_step"] = trace[1].tolist()
        points.append(point)
    return points


def eot_probe(defended: DefendedModel, spec: Any, checks: ChecksParams, x: torch.Tensor,
              y: torch.Tensor, *, num_classes: int, scoring: Scoring, seed: int) -> list[dict[str, Any]]:
    """The attack at its eps with EOT over each of ``checks.eot_probe`` draws (randomized only)."""
    swept = _swept(spec, spec.eps, checks.steps)
    return [{"samples": s, **_point(defended, _attack(defended, swept, x, y, scoring,
                                                      num_classes=num_classes, seed=seed, samples=s),
                                    y, scoring)}
            for s in progress(checks.eot_probe, "EOT probe", "draw count")]


def square(defended: DefendedModel, spec: Any, queries: int, x: torch.Tensor, y: torch.Tensor, *,
           num_classes: int, scoring: Scoring, seed: int) -> dict[str, Any]:
    """Square at the attack's eps with ``queries`` queries (through EOT's mean logits against a
    randomized defense): per-image accuracy of the defended model."""
    sq = AutoAttackSpec(kind="autoattack", eps=spec.eps, norm=spec.norm, version="custom",
                        attacks=["square"], n_queries=queries)
    queried = MeanLogits(defended, scoring.eot_samples) if defended.randomized else defended
    adv, _ = run_attack(sq, queried, x, y.to(x.device), num_classes=num_classes,
                        batch_size=scoring.batch_size, seed=seed, early_stop=False)
    return {"eps": spec.eps, "queries": queries, "eot_samples": scoring.eot_samples,
            **_point(defended, adv, y, scoring)}


def _gradients(defended: DefendedModel, x: torch.Tensor, y: torch.Tensor, adaptive: bool) -> torch.Tensor:
    xb = x.detach().requires_grad_(True)
    with bpda(adaptive):
        loss = F.cross_entropy(defended(xb), y.to(x.device), reduction="sum")
        if not loss.requires_grad:  # the defense cut the graph: no gradient reaches the input
            return torch.zeros_like(xb).flatten(1)
        (grad,) = torch.autograd.grad(loss, xb)
    return grad.flatten(1)


def zero_gradients(defended: DefendedModel, x: torch.Tensor, y: torch.Tensor, *, adaptive: bool,
                   batch_size: int) -> dict[str, float]:
    """Share of images whose cross-entropy input gradient is all zero, and of zero entries."""
    grads = torch.cat([_gradients(defended, x[i:i + batch_size], y[i:i + batch_size], adaptive)
                       for i in range(0, len(x), batch_size)])
    zero = grads == 0
    return {"images": float(zero.all(1).double().mean()), "entries": float(zero.double().mean())}


def eot_snr(defended: DefendedModel, x: torch.Tensor, y: torch.Tensor, samples: int) -> float:
    """Median over images of ``||g_bar||^2 / (v / S) - 1``: the squared norm of the EOT gradient
    (mean of S per-draw gradients, BPDA) over the variance of that mean, less its noise share.
    About 0 when the EOT gradient is noise, large when it carries a direction."""
    draws = torch.stack([_gradients(defended, x, y, True) for _ in range(samples)])  # S x N x D
    mean = draws.mean(0)
    var = draws.var(0, unbiased=True).sum(1) / samples
    return statistics.median((mean.pow(2).sum(1) / var.clamp_min(1e-30) - 1).tolist())


def randomness(defended: DefendedModel, x: torch.Tensor) -> dict[str, Any]:
    """Purify the same images twice: do the outputs differ?"""
    with torch.no_grad():
        first, second = defended.purifier(x), defended.purifier(x)
    return {"declared": defended.randomized, "detected": not torch.equal(first, second),
            "max_abs_difference": float((first - second).abs().max())}


def probe(defended: DefendedModel, checks: ChecksParams, spec: Any, x: torch.Tensor, y: torch.Tensor,
          *, num_classes: int, scoring: Scoring, seed: int) -> dict[str, Any]:
    """Every probe on the adaptive images ``x`` (on the model's device; ``y`` on the CPU)."""
    bs = scoring.batch_size
    kw = {"num_classes": num_classes, "scoring": scoring, "seed": seed}
    gradients: dict[str, Any] = {"adaptive": zero_gradients(defended, x, y, adaptive=True, batch_size=bs)}
    if not defended.purifier.differentiable:
        gradients["autograd"] = zero_gradients(defended, x, y, adaptive=False, batch_size=bs)
    if defended.randomized:
        gradients["eot_snr"] = eot_snr(defended, x[:bs], y[:bs], scoring.eot_samples)
    return {
        "attack": checks.attack, "kind": spec.kind, "norm": spec.norm, "n": len(y),
        "attack_eps": spec.eps, "steps": checks.steps, "eot_samples": scoring.eot_samples,
        "draws": scoring.draws,
        "randomness": randomness(defended, x[:bs]),
        "zero_gradient": gradients,
        "eps_sweep": eps_sweep(defended, spec, checks, x, y, **kw),
        "eot_probe": eot_probe(defended, spec, checks, x, y, **kw) if defended.randomized else None,
        "square": square(defended, spec, checks.square_queries, x, y, **kw) if checks.square_queries
        else None,
    }
