"""AutoAttack (Croce & Hein 2020) through the authors' packaged code (`pyautoattack`).

``standard`` runs APGD-CE, APGD-T, FAB-T and Square; ``rand`` runs APGD-CE and
APGD-DLR with EOT for randomized defenses; ``custom`` runs the listed ``attacks``
(the smoke profile uses APGD-CE alone). ``n_queries`` sets Square's query budget, ``n_iter``
APGD's iterations.

Against a randomized model (``samples`` > 1) the package's own loop is not used: it drops a
point as soon as one noisy draw misclassifies it and keeps the clean image wherever its last
draw says "robust". Instead every sub-attack runs on every point with ``eot_iter = samples``
(APGD returns its best-loss iterate), each candidate is scored on ``samples`` fresh draws, and
each point keeps the candidate with the lowest multi-draw accuracy, the clean image included.
The package's warnings (its ``checks.py``, through ``warnings`` or its logger) are appended to
``notes``; warnings raised elsewhere during the attack (on CUDA, torch's alerts that a kernel of
the defended model has no deterministic implementation) are not the package's and stay out.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from repurify.attacks.base import Goal, draw_logits

# the sub-attacks the per-point path runs (the randomized case: APGD's untargeted losses)
_PER_POINT = {"apgd-ce": "ce", "apgd-dlr": "dlr"}


def autoattack(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: str, eps: float,
               version: str, attacks: list[str] | None, seed: int, n_queries: int | None = None,
               n_iter: int | None = None, samples: int = 1, notes: list[str] | None = None,
               **_: object) -> torch.Tensor:
    import pyautoattack
    from pyautoattack import AutoAttack

    if goal.target is not None:
        raise ValueError("autoattack: targeted mode is not supported (AutoAttack picks targets itself)")
    logger = logging.getLogger("auto-attack")
    logger.setLevel(logging.WARNING)
    aa = AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=eps, version=version,
                    attacks=attacks, seed=seed, device=x.device)
    aa.verbose = False
    if n_queries is not None:
        aa.square.n_queries = n_queries
    if n_iter is not None:
        aa.apgd.n_iter = aa.apgd_targeted.n_iter = n_iter
    if version == "custom":  # the package leaves APGD at 5 restarts there; standard and rand use 1
        aa.apgd.n_restarts = 1
    logged = _Collect()
    logger.addHandler(logged)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if samples == 1:
                x_adv, _ = aa.run_standard_evaluation(x, goal.y, batch_size=len(x))
            else:
                x_adv = _per_point(aa, model, x, goal, samples)
    finally:
        logger.removeHandler(logged)
    if notes is not None:
        package = Path(pyautoattack.__file__).parent
        said = [str(w.message) for w in caught if package in Path(w.filename).parents] + logged.messages
        notes += [m for m in dict.fromkeys(said) if m not in notes]
    return x_adv.detach()


class _Collect(logging.Handler):
    """The warnings AutoAttack's checks log (its own logger, not ``warnings``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _per_point(aa, model: nn.Module, x: torch.Tensor, goal: Goal, samples: int) -> torch.Tensor:
    """Every sub-attack on every point; per point the candidate of lowest multi-draw accuracy."""
    from pyautoattack import checks

    if unknown := [a for a in aa.attacks_to_run if a not in _PER_POINT]:
        raise ValueError(f"autoattack against a randomized model runs {sorted(_PER_POINT)}; "
                         f"{unknown} would judge success on single draws")
    checks.check_randomized(aa.get_logits, x, goal.y, bs=len(x))
    checks.check_range_output(aa.get_logits, x)
    best, missed = x.clone(), goal.missed(draw_logits(model, x, samples))
    aa.apgd.eot_iter = samples
    for attack in aa.attacks_to_run:
        aa.apgd.loss, aa.apgd.seed = _PER_POINT[attack], aa.get_seed()
        cand = aa.apgd.perturb(x, goal.y, best_loss=True).detach()
        m = goal.missed(draw_logits(model, cand, samples))
        better = m < missed
        best[better], missed[better] = cand[better], m[better]
    return best
