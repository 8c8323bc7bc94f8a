"""The worst case: a per-image minimum over every in-budget row, and multi-draw scoring."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repurify.scoring import correct, predictions, summary
from repurify.worst_case import worst_case


def _row(attack: str, threat: str, eps: float | None, scores: list[float], **extra) -> dict:
    return {"attack": attack, "threat_model": threat, "eps": eps, "norm": "linf", "correct": scores,
            **extra}


def test_an_image_counts_only_if_it_survives_every_attack_in_the_budget() -> None:
    rows = [_row("fgsm", "oblivious", 0.1, [1, 1, 0, 1, 1], source="target"),
            _row("pgd", "whitebox", 0.1, [1, 0, 1, 1, 1]),
            _row("pgd", "whitebox", 0.05, [1, 1, 1, 0, 1, 0]),  # a smaller ball, more images
            _row("pgd", "whitebox", 0.3, [0, 0, 0, 0, 0]),  # beyond the budget: left out
            _row("cw_l2", "whitebox", None, [0, 0, 0, 0, 0])]  # minimum-norm: left out
    wc = worst_case(rows, 5, 0.1, "linf")
    assert wc["correct"] == [1, 0, 0, 0, 1] and wc["accuracy"] == pytest.approx(0.4)
    assert wc["se"] == pytest.approx((0.4 * 0.6 / 5) ** 0.5) and wc["attacks"] == 3
    assert wc["broken_by"] == {"fgsm (oblivious, target)": 1, "pgd (whitebox)": 1}
    with pytest.raises(ValueError, match="covers the first 7 images"):
        worst_case(rows, 7, 0.1, "linf")


def test_randomized_scores_take_the_per_image_minimum_of_draw_shares() -> None:
    rows = [_row("pgd", "whitebox", 0.1, [1.0, 0.6, 0.2]), _row("apgd", "whitebox", 0.1, [0.8, 1.0, 0.4])]
    wc = worst_case(rows, 3, 0.1, "linf")
    assert wc["correct"] == [0.8, 0.6, 0.2] and wc["accuracy"] == pytest.approx(1.6 / 3)
    assert wc["accuracy_all_draws"] == 0.0


class _Coin(nn.Module):
    """Predicts class 0 or 1 at random: every draw is fresh."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(len(x), 2)


def test_each_image_is_scored_on_fresh_draws() -> None:
    torch.manual_seed(0)
    x, y = torch.zeros(200, 3), torch.zeros(200, dtype=torch.long)
    assert predictions(_Coin(), x, draws=5, batch_size=64).shape == (5, 200)
    scores = correct(_Coin(), x, y, draws=5, batch_size=64)
    assert set(scores.tolist()) <= {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}
    s = summary(scores)
    assert 0.4 < s["accuracy"] < 0.6 and s["accuracy_all_draws"] < 0.1 and s["n"] == 200
