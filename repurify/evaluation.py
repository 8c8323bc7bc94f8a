"""Evaluate one defense under every configured attack and threat model.

* ``oblivious`` (the papers' gray-box): examples crafted once on the bare
  target classifier (cached by ``generate_attacks``), fed to the defense.
* ``blackbox``: (a) ``transfer`` from the separately trained substitute
  classifier (cached); (b) ``papernot``, a substitute trained on the defended
  model's labels only, attacked in white-box fashion.
* ``whitebox`` (adaptive): the attack sees purifier + classifier, with BPDA at
  the non-differentiable layers and EOT (the mean of per-draw loss gradients) over
  the randomness of randomized purifiers. Purifiers whose paper attacked them
  through autograd's own gradients at those layers (``autograd_protocol``: EGC-FL,
  GCLN) also get that protocol's rows, ``source: autograd``; the gap is a finding.
  AutoAttack's ``standard`` version runs as its ``rand`` version (APGD-CE and
  APGD-DLR with EOT, judged point by point) against randomized purifiers.
* the adaptive set (``evaluation.adaptive``): the instrument's own PGD and APGD on
  the first ``adaptive.n`` images, whose PGD run is also the convergence probe; the
  worst case over every row is taken on those images. Its APGD is skipped where a
  white-box AutoAttack ``standard`` row already runs the same sub-attacks on them.

Every row is scored on fresh draws of a randomized defense (``evaluation.draws``)
and keeps its per-image scores. ``evaluation.limits.<slot>`` makes a costly
defense's evaluation cheaper (fewer white-box attacks and images, no Papernot
substitute, a smaller adaptive set); the rows record their ``n``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from repurify.attack_specs import AUTOATTACK_ITERATIONS
from repurify.attacks import run_attack
from repurify.blackbox import train_papernot_substitute
from repurify.defenses import DefendedModel, bpda
from repurify.errors import ParamsError
from repurify.models import build_classifier
from repurify.params import AdaptiveParams, AutoAttackSpec, EvaluationLimit, PgdSpec, ProfileParams
from repurify.progress import progress
from repurify.scoring import predictions, summary
from repurify.training import accuracy
from repurify.worst_case import worst_case


@dataclass(frozen=True)
class EvalData:
    """The evaluated test images (float [0,1]) and the held-out Papernot seeds."""

    x: torch.Tensor
    y: torch.Tensor
    seeds: torch.Tensor
    num_classes: int


@dataclass(frozen=True)
class Scoring:
    """How a defended model is attacked and scored: EOT draws per gradient and fresh draws per
    image (both 1 for a deterministic defense)."""

    batch_size: int
    eot_samples: int = 1
    draws: int = 1

    @classmethod
    def of(cls, defended: DefendedModel, batch_size: int, eot_samples: int, draws: int) -> Scoring:
        if not defended.randomized:
            return cls(batch_size)
        return cls(batch_size, eot_samples, draws)


def agreement(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of equal labels (computed in float64, so 3/10 is 0.3)."""
    return (pred == truth.to(pred.device)).double().mean().item()


def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(1).cpu()
                          for i in range(0, len(x), batch_size)])


def _settings(name: str, spec: Any, threat: str) -> dict[str, Any]:
    """The attack settings every result row starts with."""
    return {"attack": name, "kind": spec.kind, "threat_model": threat,
            "eps": getattr(spec, "eps", None), "norm": spec.norm, "targeted": spec.targeted}


def attack_row(name: str, spec: Any, threat: str, pred: torch.Tensor, y: torch.Tensor,
               targets: torch.Tensor | None, **extra: Any) -> dict[str, Any]:
    """One result from one draw's predictions: the attack's settings, the accuracy of ``pred``
    and the targets it hit."""
    row = {**_settings(name, spec, threat), "accuracy": agreement(pred, y), "n": len(y), **extra}
    if targets is not None:
        row["target_hit_rate"] = agreement(pred, targets.cpu())
    return row


def scored_row(name: str, spec: Any, threat: str, defended: nn.Module, adv: torch.Tensor,
               y: torch.Tensor, targets: torch.Tensor | None, scoring: Scoring,
               **extra: Any) -> dict[str, Any]:
    """One result scored on ``scoring.draws`` fresh draws: the attack's settings, the mean
    accuracy, the share correct in every draw, its standard error and the per-image scores."""
    pred = predictions(defended, adv, draws=scoring.draws, batch_size=scoring.batch_size)
    correct = (pred == y.cpu()).double().mean(0)
    row = {**_settings(name, spec, threat), **summary(correct), "draws": scoring.draws, **extra,
           "correct": correct.tolist()}
    if targets is not None:
        row["target_hit_rate"] = (pred == targets.cpu()).double().mean().item()
    return row


def without_scores(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its per-image scores (tables that show accuracies only)."""
    return {k: v for k, v in row.items() if k != "correct"}


def _attacks(profile: ProfileParams, threat: str) -> Iterator[tuple[str, Any]]:
    for name, spec in profile.attacks.items():
        if threat in spec.threat_models:
            yield name, spec


def evaluate_defense(defended: DefendedModel, profile: ProfileParams, data: EvalData,
                     cached: dict[str, dict[str, Any]], *, seed: int, device: torch.device,
                     limit: EvaluationLimit | None = None,
                     adaptive: AdaptiveParams | None = None) -> dict[str, Any]:
    """All rows for one defense; ``cached[role]`` holds the examples made on that classifier.
    With ``adaptive``, also the adaptive set, its convergence probe and the worst case."""
    ev, limit = profile.evaluation, limit or EvaluationLimit()
    defended = defended.to(device).eval()
    scoring = Scoring.of(defended, ev.batch_size, ev.eot_samples, ev.draws)
    x, y = data.x.to(device), data.y
    rows: list[dict[str, Any]] = []
    clean = summary((predictions(defended, x, draws=scoring.draws, batch_size=ev.batch_size)
                     == y).double().mean(0))

    for threat, role in (("oblivious", "target"), ("blackbox", "substitute")):
        for name, spec in _attacks(profile, threat):
            adv = cached[role]["adversarial"][name][:limit.cached_n].to(device)
            targets = cached[role]["targets"].get(name)
            targets = None if targets is None else targets[:limit.cached_n]
            rows.append(scored_row(name, spec, threat, defended, adv, y[:len(adv)], targets, scoring,
                                   source="transfer" if role == "substitute" else "target"))

    if limit.papernot:
        rows += _papernot_rows(defended, profile, data, seed=seed, device=device, scoring=scoring)

    whitebox = limited(list(_attacks(profile, "whitebox")), limit)
    rows += whitebox_rows(defended, whitebox, x, y, num_classes=data.num_classes, scoring=scoring,
                          seed=seed, autograd_attacks=ev.autograd_attacks)
    result = {"clean_accuracy": clean["accuracy"], "clean": clean, "n": len(y),
              "randomized": defended.randomized, "eot_samples": scoring.eot_samples,
              "draws": scoring.draws, "differentiable": defended.purifier.differentiable}
    if adaptive is not None:
        covered = apgd_covered_by(whitebox, adaptive, randomized=defended.randomized)
        set_rows, convergence = adaptive_rows(defended, adaptive, x[:adaptive.n], y[:adaptive.n],
                                              num_classes=data.num_classes, scoring=scoring, seed=seed,
                                              apgd_covered_by=covered)
        rows += set_rows
        result["convergence"] = convergence
        result["worst_case"] = worst_case(rows, adaptive.n, adaptive.eps, adaptive.norm)
    return {**result, "results": rows}


def limited(specs: list[tuple[str, Any]], limit: EvaluationLimit | None) -> list[tuple[str, Any]]:
    """The white-box attacks ``limit`` keeps, each on at most ``limit.n`` images."""
    if limit is None:
        return specs
    return [(a, s if limit.n is None else s.model_copy(update={"n": min(s.n or limit.n, limit.n)}))
            for a, s in specs if limit.whitebox_attacks is None or a in limit.whitebox_attacks]


def whitebox_rows(defended: DefendedModel, specs: list[tuple[str, Any]], x: torch.Tensor,
                  y: torch.Tensor, *, num_classes: int, scoring: Scoring, seed: int,
                  autograd_attacks: list[str] | None = None) -> list[dict[str, Any]]:
    """Adaptive attacks on purifier + classifier: BPDA at non-differentiable layers, EOT (the mean
    of ``scoring.eot_samples`` per-draw loss gradients) over the randomness of randomized purifiers
    (AutoAttack: its ``rand`` version, judged point by point on multi-draw estimates). ``x`` is on
    the model's device, ``y`` on the CPU.
    An ``autograd_protocol`` purifier is also attacked through autograd's gradients by the
    ``autograd_attacks`` (None: all)."""
    rows = []
    for name, spec in progress(specs, "white-box attacks", "attack"):
        n = min(len(y), spec.n or len(y))
        extra: dict[str, Any] = {"eot_samples": scoring.eot_samples}
        if defended.randomized and spec.kind == "autoattack" and spec.version == "standard":
            spec = spec.model_copy(update={"version": "rand"})
            extra["version"] = "rand"
        also_autograd = defended.purifier.autograd_protocol and (
            autograd_attacks is None or name in autograd_attacks)
        for adaptive in (True, False) if also_autograd else (True,):  # BPDA, or autograd's
            notes: list[str] = []
            with bpda(adaptive):
                adv, targets = run_attack(spec, defended, x[:n], y[:n].to(x.device),
                                          num_classes=num_classes, batch_size=scoring.batch_size,
                                          seed=seed, early_stop=not defended.randomized,
                                          samples=scoring.eot_samples, notes=notes)
            if spec.kind == "autoattack":
                extra["autoattack_warnings"] = notes
            rows.append(scored_row(name, spec, "whitebox", defended, adv, y[:n], targets, scoring,
                                   bpda=adaptive and not defended.purifier.differentiable,
                                   **extra, **({} if adaptive else {"source": "autograd"})))
    return rows


def apgd_covered_by(whitebox: list[tuple[str, Any]], adaptive: AdaptiveParams, *,
                    randomized: bool) -> str | None:
    """The white-box AutoAttack ``standard`` row (``rand`` against a randomized defense) that
    already runs the adaptive set's APGD sub-attacks on its images, at its budget and with at least
    its iterations, or None: AutoAttack's first sub-attacks are then the same runs."""
    if not randomized and not set(adaptive.autoattack) <= {"apgd-ce", "apgd-t"}:
        return None  # randomized: APGD-CE and APGD-DLR, AutoAttack rand's own two
    for name, spec in whitebox:
        if (spec.kind == "autoattack" and spec.version == "standard" and spec.norm == adaptive.norm
                and spec.eps == adaptive.eps and (spec.n is None or spec.n >= adaptive.n)
                and (spec.n_iter or AUTOATTACK_ITERATIONS) >= adaptive.apgd_iterations):
            return name
    return None


def adaptive_rows(defended: DefendedModel, adaptive: AdaptiveParams, x: torch.Tensor,
                  y: torch.Tensor, *, num_classes: int, scoring: Scoring, seed: int,
                  apgd_covered_by: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The adaptive set (BPDA, EOT) on ``x``: PGD with the most steps and restarts, keeping each
    image's best iterate, and AutoAttack's APGD sub-attacks unless the white-box row
    ``apgd_covered_by`` runs them already; and the convergence probe, the PGD run's accuracy after
    every listed step count (first restart) and restart count (all steps)."""
    steps, restarts = adaptive.steps[-1], adaptive.restarts[-1]
    pgd = PgdSpec(kind="pgd", eps=adaptive.eps, norm=adaptive.norm, step_size=adaptive.step_size,
                  steps=steps, restarts=restarts, threat_models=["whitebox"])
    trace: list[torch.Tensor] = []
    restart_trace: list[torch.Tensor] = []
    with bpda(True):
        adv, _ = run_attack(pgd, defended, x, y.to(x.device), num_classes=num_classes,
                            batch_size=scoring.batch_size, seed=seed,
                            early_stop=not defended.randomized, samples=scoring.eot_samples,
                            keep_best=True, trace=trace, restart_trace=restart_trace)
    extra = {"set": "adaptive", "eot_samples": scoring.eot_samples,
             "bpda": not defended.purifier.differentiable}
    rows = [scored_row(f"adaptive pgd-{steps}x{restarts}", pgd, "whitebox", defended, adv, y, None,
                       scoring, step_size=adaptive.step_size, steps=steps, restarts=restarts, **extra)]
    at_step = [*trace, restart_trace[0]]  # after t steps: the t-th entry; after all: restart 1's best
    convergence = {
        "attack": rows[0]["attack"], "n": len(y), "estimate": f"{scoring.eot_samples} attack draw(s)",
        "steps": [{"steps": s, **_probe_point(at_step[s])} for s in adaptive.steps],
        "restarts": [{"restarts": r, **_probe_point(restart_trace[r - 1])} for r in adaptive.restarts]}
    if apgd_covered_by is not None:
        convergence["apgd_covered_by"] = apgd_covered_by
        return rows, convergence
    subattacks = (["apgd-ce", "apgd-dlr"] if defended.randomized else adaptive.autoattack)
    aa = AutoAttackSpec(kind="autoattack", eps=adaptive.eps, norm=adaptive.norm, version="custom",
                        attacks=subattacks, n_iter=adaptive.apgd_iterations, threat_models=["whitebox"])
    notes: list[str] = []
    with bpda(True):
        adv, _ = run_attack(aa, defended, x, y.to(x.device), num_classes=num_classes,
                            batch_size=scoring.batch_size, seed=seed, early_stop=False,
                            samples=scoring.eot_samples, notes=notes)
    rows.append(scored_row(f"adaptive autoattack ({', '.join(subattacks)})", aa, "whitebox", defended,
                           adv, y, None, scoring, autoattack_warnings=notes, **extra))
    return rows, convergence


def _probe_point(per_image: torch.Tensor) -> dict[str, Any]:
    return {"accuracy": float(per_image.mean()), "correct": per_image.tolist()}


def _papernot_rows(defended: DefendedModel, profile: ProfileParams, data: EvalData, *, seed: int,
                   device: torch.device, scoring: Scoring) -> list[dict[str, Any]]:
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
        rows.append(scored_row(name, spec, "blackbox", defended, adv, y[:n], targets, scoring,
                               source="papernot", substitute_accuracy=sub_acc, **stats))
    return rows


def load_eval_data(split, profile: ProfileParams, target: nn.Module | None = None,
                   device: torch.device | None = None) -> EvalData:
    """The evaluated test images and ``papernot.seed_images`` seeds: the first test images not
    evaluated, or with ``papernot.seeds_from: train`` the first training images.

    By default the first ``evaluation.n`` test images. With ``evaluation.per_class`` (OAG Sec.
    IV-A: 2 correctly classified images per class), the first that many images of each class
    that ``target`` classifies correctly, in test order; the seeds are the first other images.
    """
    ev = profile.evaluation
    x, y = split.x_test, split.y_test  # uint8: only the selected images become floats
    if ev.per_class is None:
        if len(y) < ev.n:
            raise ParamsError(f"evaluation.n ({ev.n}) exceeds the {len(y)} test images; lower it")
        picked = torch.arange(ev.n)
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
    k = ev.papernot.seed_images
    if ev.papernot.seeds_from == "train":
        if len(split.x_train) < k:
            raise ParamsError(f"evaluation.papernot.seed_images ({k}) exceeds the {len(split.x_train)} "
                              "training images; lower it")
        return EvalData(x[picked].float() / 255, y[picked], split.x_train[:k].float() / 255,
                        len(split.classes))
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[picked] = False
    seeds = torch.nonzero(rest).flatten()[:k]
    if len(seeds) < k:
        raise ParamsError(
            f"evaluation.n ({ev.n}) + evaluation.papernot.seed_images ({k}) = {ev.n + k} exceeds the "
            f"{len(y)} test images; lower them, or take the seeds from the training split "
            f"(evaluation.papernot.seeds_from: train)")
    return EvalData(x[picked].float() / 255, y[picked], x[seeds].float() / 255, len(split.classes))
