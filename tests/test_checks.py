"""Gradient-masking probes: the iteration trace, the eps sweep, zero gradients, EOT noise,
randomness, Square and the EOT probe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repurify.attacks import run_attack
from repurify.checks import eot_snr, eps_sweep, probe, randomness, square, zero_gradients
from repurify.defenses import DefendedModel, Identity, Purifier
from repurify.defenses.bit_depth import BitDepth
from repurify.evaluation import Scoring, predict
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
    """trace[k] (per image: not fooled within k steps) is, image by image, the outcome of the same
    attack with k steps run separately; batches are concatenated."""
    model, x, y = _data()
    kw = {"num_classes": 3, "seed": 5, "early_stop": True}
    trace: list[torch.Tensor] = []
    run_attack(spec, model, x, y, batch_size=10, trace=trace, **kw)
    counts = [int(t.sum()) for t in trace]
    assert len(trace) == spec.steps and all(len(t) == len(y) for t in trace)
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]  # once fooled, always
    for k in range(1, len(trace)):
        adv, _ = run_attack(spec.model_copy(update={"steps": k}), model, x, y, batch_size=10, **kw)
        assert torch.equal(trace[k].bool(), predict(model, adv, 64) == y), k


def test_eps_sweep_reaches_zero_when_unbounded_and_records_every_iteration() -> None:
    model, x, y = _data()
    defended = DefendedModel(Identity(), model)
    spec = PgdSpec(kind="pgd", eps=0.05, step_size=0.01, steps=3)
    checks = ChecksParams(attack="pgd", eps=[0.05, 1.0], steps=8, square_queries=0)
    points = eps_sweep(defended, spec, checks, x, y, num_classes=3, scoring=Scoring(64), seed=0)
    assert [p["eps"] for p in points] == [0.05, 1.0]
    assert points[1]["step_size"] == pytest.approx(0.2)  # scaled with eps
    assert points[1]["accuracy"] == 0.0 and points[0]["accuracy"] > 0.0
    for p in points:
        assert len(p["iterations"]) == checks.steps + 1 and p["iterations"][-1] == p["accuracy"]
        assert p["iterations"] == sorted(p["iterations"], reverse=True)
        assert len(p["correct"]) == len(y) and sum(p["correct"]) / len(y) == p["accuracy"]
    assert len(points[0]["first_step"]) == len(y) and "first_step" not in points[1]  # the attack's eps


def test_zero_gradients_through_a_quantizer_and_not_under_bpda() -> None:
    model, x, y = _data(8)
    defended = DefendedModel(BitDepth(3), model)
    assert zero_gradients(defended, x, y, adaptive=False, batch_size=3) == {"images": 1.0, "entries": 1.0}
    assert zero_gradients(defended, x, y, adaptive=True, batch_size=3) == {"images": 0.0, "entries": 0.0}


class _Mask(Purifier):
    """Zeroes half the pixels: half the gradient entries are zero on every image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x)
        mask[..., :2] = 1
        return x * mask


def test_zero_gradient_entries_are_counted_even_when_no_image_is_all_zero() -> None:
    model, x, y = _data(8)
    zero = zero_gradients(DefendedModel(_Mask(), model), x, y, adaptive=True, batch_size=3)
    assert zero == {"images": 0.0, "entries": 0.5}


class _RandomSigns(Purifier):
    """Flips each pixel's sign at random: every draw's gradient has random signs, mean zero."""

    randomized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.randn_like(x).sign()


def test_eot_signal_to_noise_separates_a_direction_from_noise() -> None:
    """Small input noise leaves a linear model's gradient the same in every draw (a direction);
    random sign flips make the draws' gradients cancel, so their mean is noise."""
    torch.manual_seed(0)
    x, y = torch.rand(16, 1, 4, 4), torch.zeros(16, dtype=torch.long)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    assert eot_snr(DefendedModel(_Noisy(), linear), x, y, 20) > 100
    assert abs(eot_snr(DefendedModel(_RandomSigns(), linear), x, y, 20)) < 1


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
    out = square(defended, spec, 50, x, y, num_classes=3, scoring=Scoring(64), seed=0)
    assert out["queries"] == 50 and out["eps"] == 0.3 and out["accuracy"] < 1.0


def test_probe_reports_both_gradients_for_nondifferentiable_and_eot_for_randomized() -> None:
    model, x, y = _data(6)
    checks = ChecksParams(attack="pgd", eps=[0.1, 1.0], steps=2, square_queries=5, eot_probe=[1, 2])
    spec = PgdSpec(kind="pgd", eps=0.1, step_size=0.05, steps=2)
    out = probe(DefendedModel(BitDepth(3), model), checks, spec, x, y, num_classes=3,
                scoring=Scoring(4), seed=0)
    assert out["n"] == 6 and out["eot_samples"] == 1 and out["eot_probe"] is None
    assert set(out["zero_gradient"]) == {"adaptive", "autograd"}
    assert out["square"]["eot_samples"] == 1 and len(out["square"]["correct"]) == 6
    noisy_model = DefendedModel(_Noisy(), model)
    noisy = probe(noisy_model, checks, spec, x, y, num_classes=3,
                  scoring=Scoring.of(noisy_model, 4, eot_samples=3, draws=5), seed=0)
    assert noisy["eot_samples"] == 3 and noisy["draws"] == 5
    assert set(noisy["zero_gradient"]) == {"adaptive", "eot_snr"}
    assert [p["samples"] for p in noisy["eot_probe"]] == [1, 2]
    assert all(v in {0, 0.2, 0.4, 0.6, 0.8, 1} for v in noisy["square"]["correct"])  # 5 draws
