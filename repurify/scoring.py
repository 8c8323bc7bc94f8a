"""Scoring a defended model on (adversarial) images: per image, the share of ``draws`` fresh
draws of a randomized defense that classify it correctly (0 or 1 for a deterministic one).

A row's ``accuracy`` is the mean over images and draws; ``accuracy_all_draws`` the share of
images correct in every draw; ``se`` the standard error of the mean over images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from repurify.attacks.base import draw_chunks
from repurify.stats import standard_error


def predictions(model: nn.Module, x: torch.Tensor, *, draws: int, batch_size: int) -> torch.Tensor:
    """Predicted labels of ``draws`` fresh forward passes (CPU, shape ``draws x N``)."""
    with torch.no_grad():
        batches = (x[i:i + batch_size] for i in range(0, len(x), batch_size))
        return torch.cat([torch.cat([c.argmax(-1).cpu() for c in draw_chunks(model, xb, draws)])
                          for xb in batches], dim=1)


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, draws: int,
            batch_size: int) -> torch.Tensor:
    """Per image (CPU, float64), the share of ``draws`` forward passes that predict ``y``."""
    return (predictions(model, x, draws=draws, batch_size=batch_size) == y.cpu()).double().mean(0)


def summary(per_image: torch.Tensor | list[float]) -> dict[str, Any]:
    """``accuracy``, ``accuracy_all_draws``, ``se`` and ``n`` of per-image scores."""
    values = [float(v) for v in per_image]
    return {"accuracy": sum(values) / len(values), "accuracy_all_draws": sum(v == 1.0 for v in values)
            / len(values), "se": standard_error(values), "n": len(values)}
