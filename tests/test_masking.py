"""Gradient-masking verdicts: a clean bill for consistent evidence, each check failing on the
evidence it looks for, paired comparisons that ignore noise, and "inconclusive" when evidence the
checklist needs is missing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from repurify.masking import assess
from repurify.stats import paired, sign_test, standard_error

N = 100


def _scores(acc: float, n: int = N) -> list[float]:
    """Per-image scores with the first ``acc * n`` images robust (nested across accuracies)."""
    k = round(acc * n)
    return [1.0] * k + [0.0] * (n - k)


def _row(attack: str, kind: str, threat: str, acc: float, **extra: Any) -> dict[str, Any]:
    return {"attack": attack, "kind": kind, "threat_model": threat, "accuracy": acc, "n": N,
            "eps": None if kind == "cw_l2" else 0.1, "norm": "linf", "targeted": "none",
            "eot_samples": 1, "correct": _scores(acc), **extra}


def _point(acc: float, **extra: Any) -> dict[str, Any]:
    return {"accuracy": acc, "correct": _scores(acc), **extra}


def _evidence() -> tuple[dict[str, Any], dict[str, Any]]:
    evaluation = {"clean_accuracy": 0.98, "randomized": False, "draws": 1, "results": [
        _row("fgsm", "fgsm", "oblivious", 0.80, source="target"),
        _row("pgd", "pgd", "oblivious", 0.70, source="target"),
        _row("pgd", "pgd", "blackbox", 0.75, source="transfer"),
        _row("fgsm", "fgsm", "whitebox", 0.40),
        _row("pgd", "pgd", "whitebox", 0.20),
        _row("autoattack", "autoattack", "whitebox", 0.15, autoattack_warnings=[]),
    ], "convergence": {"attack": "adaptive pgd-200x10", "n": N,
                       "steps": [_point(0.2, steps=100), _point(0.2, steps=200)],
                       "restarts": [_point(0.2, restarts=5), _point(0.19, restarts=10)]}}
    probes = {"attack": "pgd", "n": N, "attack_eps": 0.1, "steps": 4, "eot_samples": 1,
              "randomness": {"declared": False, "detected": False, "max_abs_difference": 0.0},
              "zero_gradient": {"adaptive": {"images": 0.0, "entries": 0.01}},
              "eps_sweep": [{"eps": 0.1, **_point(0.2), "iterations": [0.9, 0.5, 0.3, 0.2, 0.2],
                             "first_step": _scores(0.5)},
                            {"eps": 0.5, **_point(0.05), "iterations": [0.9, 0.2, 0.1, 0.05, 0.05]},
                            {"eps": 1.0, **_point(0.0), "iterations": [0.9, 0.1, 0.0, 0.0, 0.0]}],
              "eot_probe": None,
              "square": {"eps": 0.1, "queries": 5000, "eot_samples": 1, **_point(0.35)}}
    return evaluation, probes


def _assess(mutate=None) -> dict[str, Any]:
    evaluation, probes = copy.deepcopy(_evidence())
    if mutate:
        mutate(evaluation, probes)
    return assess(evaluation, probes)


def _set(target: dict[str, Any], acc: float) -> None:
    target.update(accuracy=acc, correct=_scores(acc))


def test_consistent_evidence_passes_every_check() -> None:
    result = _assess()
    assert result["verdict"] == "not detected" and result["failed"] == [] and result["not_run"] == []
    assert {c["status"] for c in result["checks"]} == {"pass"}
    assert not result["paper_protocol_masked"]


@pytest.mark.parametrize(("mutate", "check"), [
    (lambda e, p: _set(e["results"][4], 0.60), "iterative >= one-step"),
    (lambda e, p: p["eps_sweep"][0].update(first_step=_scores(0.05)), "iterative >= one-step"),
    (lambda e, p: _set(e["results"][3], 0.95), "white-box >= transfer, oblivious"),
    (lambda e, p: _set(p["eps_sweep"][2], 0.30), "unbounded eps -> 0"),
    (lambda e, p: _set(p["eps_sweep"][1], 0.60), "unbounded eps -> 0"),
    (lambda e, p: _set(p["square"], 0.02), "gradient-free <= gradient"),
    (lambda e, p: p["randomness"].update(detected=True, max_abs_difference=0.1), "randomness -> EOT"),
    (lambda e, p: p["randomness"].update(declared=True, detected=True), "randomness -> EOT"),
    (lambda e, p: p["zero_gradient"]["adaptive"].update(images=0.3), "non-zero gradients"),
    (lambda e, p: p["zero_gradient"]["adaptive"].update(entries=0.9), "non-zero gradients"),
    (lambda e, p: _set(e["convergence"]["steps"][1], 0.10), "attack converged"),
    (lambda e, p: _set(e["convergence"]["restarts"][1], 0.10), "attack converged"),
    (lambda e, p: e["results"][5].update(autoattack_warnings=["there are zero gradients"]),
     "AutoAttack's checks"),
])
def test_each_check_fails_on_its_evidence(mutate, check: str) -> None:
    result = _assess(mutate)
    assert result["verdict"] == "suspected" and result["failed"] == [check]


def test_comparisons_are_paired_on_the_same_images() -> None:
    """Five more images broken by the last doubling is beyond noise; four is not (sign test)."""
    assert sign_test(5, 0) < 0.05 < sign_test(4, 0)
    assert _assess(lambda e, p: _set(e["convergence"]["steps"][1], 0.16))["verdict"] == "not detected"
    assert _assess(lambda e, p: _set(e["convergence"]["steps"][1], 0.15))["failed"] == ["attack converged"]
    # equal accuracies on different images: discordant both ways, not a difference
    assert paired([1, 0, 1, 0], [0, 1, 0, 1]) == {"higher": 2, "lower": 2, "p": pytest.approx(0.6875)}
    with pytest.raises(ValueError, match="different image sets"):
        paired([1, 0], [1, 0, 1])
    assert standard_error([1.0, 0.0, 1.0, 0.0]) == pytest.approx(0.25)


def test_autoattack_does_not_count_as_a_gradient_attack() -> None:
    """AutoAttack runs Square itself: beside a strong Square it must not hide the gap."""
    def strong_square(e: dict, p: dict) -> None:
        _set(p["square"], 0.02)
        _set(e["results"][5], 0.01)

    assert _assess(strong_square)["failed"] == ["gradient-free <= gradient"]


def test_randomized_with_eot_needs_the_eot_probe() -> None:
    def randomized(e: dict, p: dict) -> None:
        e["randomized"] = True
        p["randomness"].update(declared=True, detected=True, max_abs_difference=0.2)
        for r in e["results"]:
            r["eot_samples"] = 20
        p["square"]["eot_samples"] = 20
        e["results"][5]["autoattack_warnings"] = ["it seems to be a randomized defense! ..."]

    result = _assess(randomized)
    assert result["verdict"] == "inconclusive" and result["not_run"] == ["EOT converged"]

    def with_probe(e: dict, p: dict) -> None:
        randomized(e, p)
        p["eot_probe"] = [_point(0.5, samples=1), _point(0.25, samples=16), _point(0.24, samples=32)]
        p["zero_gradient"]["eot_snr"] = 5.0

    assert _assess(with_probe)["verdict"] == "not detected"

    def noisy(e: dict, p: dict) -> None:
        with_probe(e, p)
        p["zero_gradient"]["eot_snr"] = 0.1
        p["eot_probe"][2] = _point(0.10, samples=32)

    assert _assess(noisy)["failed"] == ["non-zero gradients", "EOT converged"]


def test_missing_evidence_is_inconclusive_and_paper_protocol_is_judged_apart() -> None:
    def strip(e: dict, p: dict) -> None:
        e["results"] = [r for r in e["results"] if r["attack"] != "fgsm"]
        p["square"] = None
        del e["convergence"]
        e["results"].append(_row("pgd", "pgd", "whitebox", 0.99, source="autograd"))
        p["zero_gradient"]["autograd"] = {"images": 1.0, "entries": 1.0}

    result = _assess(strip)
    status = {c["name"]: c["status"] for c in result["checks"]}
    assert status["gradient-free <= gradient"] == "not run"
    assert status["attack converged"] == "not run"
    assert status["iterative >= one-step"] == "pass"  # the first step vs the last still compared
    assert status["autograd protocol not masked"] == "fail"
    assert result["paper_protocol_masked"] and result["verdict"] == "inconclusive"
    assert result["not_run"] == ["gradient-free <= gradient", "attack converged"]


def test_square_below_autoattacks_budget_is_weak() -> None:
    result = _assess(lambda e, p: p["square"].update(queries=100))
    assert result["verdict"] == "not detected" and result["weak"] == ["gradient-free <= gradient"]
