"""Evaluate one defense under every configured attack and threat model.

* ``oblivious`` (the papers' gray-box): examples crafted once on the bare
  target classifier (cached by ``generate_attacks``), fed to the defense.
* ``blackbox``: (a) ``transfer`` from the separately trained substitute
  classifier (cached); (b) ``papernot``, a substitute trained on the defended
  model's labels only, attacked in white-box fashion.
* ``whitebox`` (adaptive): the attack sees purifier + classifier, with BPDA at
  the non-differentiable layers and EOT over the randomness of randomized
  purifiers. Purifiers whose paper attacked them through autograd's own
  gradients at those layers (``autograd_protocol``: EGC-FL, GCLN) also get
  that protocol's rows, ``source: autograd``; the gap is a finding. AutoAttack's
  ``standard`` version runs as its ``rand`` version (APGD-CE and APGD-DLR with 20
  EOT iterations) against randomized purifiers, as its authors prescribe.

``evaluation.limits.<slot>`` makes a costly defense's evaluation cheaper (fewer
white-box attacks and images, no Papernot substitute); the rows record their ``n``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from repurify.attacks import run_attack
from repurify.blackbox import train_papernot_substitute
from repurify.defenses import EOT, DefendedModel, bpda
from repurify.errors import ParamsError
from repurify.models import build_classifier
from repurify.params import EvaluationLimit, ProfileParams
from repurify.training import accuracy


@dataclass(frozen=True)
class EvalData:
    """The evaluated test images (float [0,1]) and the held-out Papernot seeds."""

    x: torch.Tensor
    y: torch.Tensor
    seeds: torch.Tensor
    num_classes: int


def agreement(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of equal labels (computed in float64, so 3/10 is 0.3)."""
    return (pred == truth.to(pred.device)).double().mean().item()


def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(1).cpu()
                          for i in range(0, len(x), batch_size)])


def attack_row(name: str, spec: Any, threat: str, pred: torch.Tensor, y: torch.Tensor,
               targets: torch.Tensor | None, **extra: Any) -> dict[str, Any]:
    """One result: the attack's settings, the accuracy of ``pred`` and the targets it hit."""
    row = {"attack": name, "kind": spec.kind, "threat_model": threat,
           "eps": getattr(spec, "eps", None), "norm": spec.norm, "targeted": spec.targeted,
           "accuracy": agreement(pred, y), "n": len(y), **extra}
    if targets is not None:
        row["target_hit_rate"] = agreement(pred, targets.cpu())
    return row


def _attacks(profile: ProfileParams, threat: str) -> Iterator[tuple[str, Any]]:
    for name, spec in profile.attacks.items():
        if threat in spec.threat_models:
            yield name, spec


def evaluate_defense(defended: DefendedModel, profile: ProfileParams, data: EvalData,
                     cached: dict[str, dict[str, Any]], *, seed: int, device: torch.device,
                     limit: EvaluationLimit | None = None) -> dict[str, Any]:
    """All rows for one defense; ``cached[role]`` holds the examples made on that classifier."""
    ev, limit = profile.evaluation, limit or EvaluationLimit()
    defended = defended.to(device).eval()
    x, y = data.x.to(device), data.y
    rows: list[dict[str, Any]] = []
    clean = agreement(predict(defended, x, ev.batch_size), y)

    for threat, role in (("oblivious", "target"), ("blackbox", "substitute")):
        for name, spec in _attacks(profile, threat):
            adv = cached[role]["adversarial"][name].to(device)
            targets = cached[role]["targets"].get(name)
            n = len(adv)
            rows.append(attack_row(name, spec, threat, predict(defended, adv, ev.batch_size), y[:n],
                                   targets, source="transfer" if role == "substitute" else "target"))

    if limit.papernot:
        rows += _papernot_rows(defended, profile, data, seed=seed, device=device)

    rows += whitebox_rows(defended, limited(list(_attacks(profile, "whitebox")), limit), x, y,
                          num_classes=data.num_classes, batch_size=ev.batch_size,
                          eot_samples=ev.eot_samples, seed=seed, autograd_attacks=ev.autograd_attacks)
    return {"clean_accuracy": clean, "n": len(y), "randomized": defended.randomized,
            "differentiable": defended.purifier.differentiable, "results": rows}


def limited(specs: list[tuple[str, Any]], limit: EvaluationLimit | None) -> list[tuple[str, Any]]:
    """The white-box attacks ``limit`` keeps, each on at most ``limit.n`` images."""
    if limit is None:
        return specs
    return [(a, s if limit.n is None else s.model_copy(update={"n": min(s.n or limit.n, limit.n)}))
            for a, s in specs if limit.whitebox_attacks is None or a in limit.whitebox_attacks]


def whitebox_rows(defended: DefendedModel, specs: list[tuple[str, Any]], x: torch.Tensor,
                  y: torch.Tensor, *, num_classes: int, batch_size: int, eot_samples: int,
                  seed: int, autograd_attacks: list[str] | None = None) -> list[dict[str, Any]]:
    """Adaptive attacks on purifier + classifier: BPDA at non-differentiable layers, EOT over
    the randomness of randomized purifiers (AutoAttack: its ``rand`` version, which does its own
    EOT). ``x`` is on the model's device, ``y`` on the CPU.
    An ``autograd_protocol`` purifier is also attacked through autograd's gradients by the
    ``autograd_attacks`` (None: all)."""
    rows = []
    for name, spec in tqdm(specs, desc="white-box", disable=None, leave=False):
        n = min(len(y), spec.n or len(y))
        attacked: nn.Module = defended
        extra: dict[str, Any] = {"eot_samples": 1}
        if defended.randomized and spec.kind == "autoattack" and spec.version == "standard":
            spec = spec.model_copy(update={"version": "rand"})  # its own 20 EOT iterations
            extra = {"eot_samples": 20, "version": "rand"}
        elif defended.randomized:
            attacked, extra = EOT(defended, eot_samples), {"eot_samples": eot_samples}
        also_autograd = defended.purifier.autograd_protocol and (
            autograd_attacks is None or name in autograd_attacks)
        for adaptive in (True, False) if also_autograd else (True,):  # BPDA, or autograd's
            with bpda(adaptive):
                adv, targets = run_attack(spec, attacked, x[:n], y[:n].to(x.device),
                                          num_classes=num_classes, batch_size=batch_size, seed=seed,
                                          early_stop=not defended.randomized)
            rows.append(attack_row(name, spec, "whitebox", predict(defended, adv, batch_size), y[:n],
                                   targets, bpda=adaptive and not defended.purifier.differentiable,
                                   **extra, **({} if adaptive else {"source": "autograd"})))
    return rows


def _papernot_rows(defended: DefendedModel, profile: ProfileParams, data: EvalData, *, seed: int,
                   device: torch.device) -> list[dict[str, Any]]:
    """Train a substitute on the defended model's labels, attack it, transfer (AdvAE protocol)."""
    ev, pn = profile.evaluation, profile.evaluation.papernot
    specs = [(a, profile.attacks[a]) for a in pn.attacks
             if "blackbox" in profile.attacks[a].threat_models]
    if not specs:
        return []
    cfg = profile.classifiers.target
    target = defended.classifier
    substitute = build_classifier(cfg.arch, tuple(data.x.shape[1:]), data.num_classes,
                                  tuple(target.mean.flatten().tolist()),
                                  tuple(target.std.flatten().tolist()))
    gen = torch.Generator().manual_seed(seed + 17)
    stats = train_papernot_substitute(defended, substitute, data.seeds, rounds=pn.rounds,
                                      epochs_per_round=pn.epochs_per_round, lam=pn.lam, cfg=cfg,
                                      device=device, gen=gen)
    sub_acc = accuracy(substitute, data.x, data.y, device)
    x, y = data.x.to(device), data.y
    rows = []
    for name, spec in specs:
        n = min(len(y), spec.n or len(y))
        adv, targets = run_attack(spec, substitute, x[:n], y[:n].to(device),
                                  num_classes=data.num_classes, batch_size=ev.batch_size, seed=seed,
                                  early_stop=False)
        rows.append(attack_row(name, spec, "blackbox", predict(defended, adv, ev.batch_size), y[:n],
                               targets, source="papernot", substitute_accuracy=sub_acc, **stats))
    return rows


def load_eval_data(split, profile: ProfileParams, target: nn.Module | None = None,
                   device: torch.device | None = None) -> EvalData:
    """The evaluated test images and, after them, ``papernot.seed_images`` seeds.

    By default the first ``evaluation.n`` test images. With ``evaluation.per_class`` (OAG Sec.
    IV-A: 2 correctly classified images per class), the first that many images of each class
    that ``target`` classifies correctly, in test order; the seeds are the first other images.
    """
    ev = profile.evaluation
    x, y = split.x_test, split.y_test  # uint8: only the selected images become floats
    if ev.per_class is None:
        picked = torch.arange(min(ev.n, len(y)))
    else:
        if target is None:
            raise ValueError("evaluation.per_class selects by the target's predictions: pass it")
        device, bs = device or torch.device("cpu"), ev.batch_size
        target = target.to(device).eval()
        with torch.no_grad():
            pred = torch.cat([target(x[i:i + bs].to(device).float() / 255).argmax(1).cpu()
                              for i in range(0, len(y), bs)])
        correct = pred == y
        picked = torch.cat([torch.nonzero(correct & (y == c)).flatten()[:ev.per_class]
                            for c in range(len(split.classes))]).sort().values
        if len(picked) != ev.n:
            raise ParamsError(
                f"evaluation.n: {ev.n}, but evaluation.per_class {ev.per_class} selects {len(picked)} "
                f"correctly classified test images ({len(split.classes)} classes); set n to that")
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[picked] = False
    seeds = torch.nonzero(rest).flatten()[:ev.papernot.seed_images]
    if len(picked) < ev.n or len(seeds) < ev.papernot.seed_images:
        need = ev.n + ev.papernot.seed_images
        raise ParamsError(
            f"evaluation.n ({ev.n}) + evaluation.papernot.seed_images ({ev.papernot.seed_images}) "
            f"= {need} exceeds the {len(y)} test images; lower them")
    return EvalData(x[picked].float() / 255, y[picked], x[seeds].float() / 255, len(split.classes))
