"""Gradient-masking probes: the iteration trace, the eps sweep, zero gradients, randomness, Square."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repurify.attacks import run_attack
from repurify.checks import eps_sweep, probe, randomness, square, zero_gradient_fraction
from repurify.defenses import DefendedModel, Identity, Purifier
from repurify.defenses.baselines import BitDepth
from repurify.evaluation import agreement, predict
from repurify.params import BimSpec, ChecksParams, PgdSpec


def _data(n: int = 24) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # every image starts correctly classified
    return model, x, y


class _Noisy(Purifier):
    randomized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.05 * torch.randn_like(x)).clamp(0, 1)


@pytest.mark.parametrize("spec", [BimSpec(kind="bim", eps=0.08, step_size=0.02, steps=6),
                                  PgdSpec(kind="pgd", eps=0.08, step_size=0.02, steps=6)])
def test_trace_equals_the_accuracy_of_shorter_attacks(spec) -> None:
    """trace[k] (examples not fooled within k steps) is the accuracy of the same attack with k
    steps, run separately; batching sums the counts."""
    model, x, y = _data()
    kw = {"num_classes": 3, "seed": 5, "early_stop": True}
    trace: list[int] = []
    run_attack(spec, model, x, y, batch_size=10, trace=trace, **kw)
    assert len(trace) <= spec.steps and trace[0] <= len(y)
    assert trace == sorted(trace, reverse=True)  # early stopping: once fooled, always fooled
    for k in range(1, len(trace)):
        adv, _ = run_attack(spec.model_copy(update={"steps": k}), model, x, y, batch_size=10, **kw)
        assert trace[k] == round(agreement(predict(model, adv, 64), y) * len(y)), k


def test_eps_sweep_reaches_zero_when_unbounded_and_records_every_iteration() -> None:
    model, x, y = _data()
    defended = DefendedModel(Identity(), model)
    spec = PgdSpec(kind="pgd", eps=0.05, step_size=0.01, steps=3)
    checks = ChecksParams(attack="pgd", eps=[0.05, 1.0], steps=8, n=24, square_queries=0)
    points = eps_sweep(defended, spec, checks, x, y, num_classes=3, batch_size=64, eot_samples=1, seed=0)
    assert [p["eps"] for p in points] == [0.05, 1.0]
    assert points[1]["step_size"] == pytest.approx(0.2)  # scaled with eps
    assert points[1]["accuracy"] == 0.0 and points[0]["accuracy"] > 0.0
    for p in points:
        assert len(p["iterations"]) == checks.steps + 1 and p["iterations"][-1] == p["accuracy"]
        assert p["iterations"] == sorted(p["iterations"], reverse=True)


def test_zero_gradients_through_a_quantizer_and_not_under_bpda() -> None:
    model, x, y = _data(8)
    defended = DefendedModel(BitDepth(3), model)
    assert zero_gradient_fraction(defended, x, y, adaptive=False, batch_size=3) == 1.0
    assert zero_gradient_fraction(defended, x, y, adaptive=True, batch_size=3) == 0.0


def test_randomness_is_detected_beside_the_declaration() -> None:
    model, x, _ = _data(4)
    assert randomness(DefendedModel(Identity(), model), x) == {
        "declared": False, "detected": False, "max_abs_difference": 0.0}
    noisy = randomness(DefendedModel(_Noisy(), model), x)
    assert noisy["declared"] and noisy["detected"] and noisy["max_abs_difference"] > 0


def test_square_lowers_accuracy_within_its_budget() -> None:
    model, x, y = _data(12)
    defended = DefendedModel(Identity(), model)
    spec = PgdSpec(kind="pgd", eps=0.3, step_size=0.05, steps=3)
    out = square(defended, spec, 50, x, y, num_classes=3, batch_size=64, seed=0)
    assert out["queries"] == 50 and out["eps"] == 0.3 and out["accuracy"] < 1.0


def test_probe_keeps_n_images_and_reports_both_gradients_for_nondifferentiable() -> None:
    model, x, y = _data(10)
    checks = ChecksParams(attack="pgd", eps=[0.1, 1.0], steps=2, n=6, square_queries=0)
    spec = PgdSpec(kind="pgd", eps=0.1, step_size=0.05, steps=2)
    out = probe(DefendedModel(BitDepth(3), model), checks, spec, x, y, num_classes=3, batch_size=4,
                eot_samples=4, seed=0)
    assert out["n"] == 6 and out["square"] is None and out["eot_samples"] == 1
    assert set(out["zero_gradient"]) == {"adaptive", "autograd"}
    noisy = probe(DefendedModel(_Noisy(), model), checks, spec, x, y, num_classes=3, batch_size=4,
                  eot_samples=4, seed=0)
    assert noisy["eot_samples"] == 4 and set(noisy["zero_gradient"]) == {"adaptive"}
