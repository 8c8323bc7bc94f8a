"""AutoAttack (Croce & Hein 2020) through the authors' packaged code (`pyautoattack`).

``standard`` runs APGD-CE, APGD-T, FAB-T and Square; ``rand`` runs APGD-CE and
APGD-DLR with 20 EOT iterations for randomized defenses; ``custom`` runs the
listed ``attacks`` (the smoke profile uses APGD-CE alone). ``n_queries`` sets
Square's query budget.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from repurify.attacks.base import Goal


def autoattack(model: nn.Module, x: torch.Tensor, goal: Goal, *, norm: str, eps: float,
               version: str, attacks: list[str] | None, seed: int, n_queries: int | None = None,
               **_: object) -> torch.Tensor:
    from pyautoattack import AutoAttack

    if goal.target is not None:
        raise ValueError("autoattack: targeted mode is not supported (AutoAttack picks targets itself)")
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    aa = AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=eps, version=version,
                    attacks=attacks, seed=seed, device=x.device)
    aa.verbose = False
    if n_queries is not None:
        aa.square.n_queries = n_queries
    x_adv, _ = aa.run_standard_evaluation(x, goal.y, batch_size=len(x))
    return x_adv.detach()
