"""EOT's draws stacked into one call against one call per draw, through OAG before the target.

OAG declares ``independent_rows`` (every row its own seed), so :func:`input_gradient` stacks its
draws; the loop is the same model behind a wrapper that does not declare it. The synthesis cost
grows linearly with T_N, so a few network steps give the ratio of a full run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmarks.oag import TIMING_VALUES
from benchmarks.timing import median_seconds
from repurify.attacks import Goal
from repurify.attacks.base import input_gradient
from repurify.defenses.base import DefendedModel, bpda
from repurify.defenses.oag import OAG, OagSpec, Settings


class _DrawByDraw(nn.Module):
    """``model`` with one draw a call: what EOT does for a purifier that shares its draw."""

    independent_rows = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def eot_stacking(spec: OagSpec, target: nn.Module, x: torch.Tensor, y: torch.Tensor, *, samples: int,
                 network_steps: int, repeats: int = 3) -> dict[str, Any]:
    """Seconds of one EOT gradient (``samples`` draws, BPDA through OAG) stacked and looped."""
    s = Settings(network_steps=network_steps, image_steps=spec.image_steps, kernel=spec.kernel,
                 filters=spec.filters, scale=spec.scale, **TIMING_VALUES)
    model = DefendedModel(OAG(s, seed=0, batch_size=spec.batch_size), target)
    goal = Goal(y)
    with bpda():
        t_stacked, t_looped = median_seconds(lambda: input_gradient(model, x, goal, samples),
                                             lambda: input_gradient(_DrawByDraw(model), x, goal, samples),
                                             repeats=repeats)
    return {"images": len(x), "samples": samples, "network_steps": network_steps,
            "oag_batch_size": spec.batch_size, "repeats": repeats, "seconds_stacked": t_stacked,
            "seconds_looped": t_looped, "speedup": t_looped / t_stacked}
