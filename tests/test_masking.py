"""Gradient-masking verdicts: a clean bill for consistent evidence, and each check failing on the
evidence it looks for."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from repurify.masking import assess, margin


def _row(attack: str, kind: str, threat: str, acc: float, **extra: Any) -> dict[str, Any]:
    return {"attack": attack, "kind": kind, "threat_model": threat, "accuracy": acc, "n": 100,
            "eps": None if kind == "cw_l2" else 0.1, "targeted": "none", "eot_samples": 1, **extra}


def _evidence() -> tuple[dict[str, Any], dict[str, Any]]:
    evaluation = {"clean_accuracy": 0.98, "randomized": False, "results": [
        _row("fgsm", "fgsm", "oblivious", 0.80, source="target"),
        _row("pgd", "pgd", "oblivious", 0.70, source="target"),
        _row("pgd", "pgd", "blackbox", 0.75, source="transfer"),
        _row("fgsm", "fgsm", "whitebox", 0.40),
        _row("pgd", "pgd", "whitebox", 0.20),
    ]}
    probes = {"attack": "pgd", "n": 100, "attack_eps": 0.1, "steps": 4,
              "randomness": {"declared": False, "detected": False, "max_abs_difference": 0.0},
              "zero_gradient": {"adaptive": 0.0},
              "eps_sweep": [{"eps": 0.1, "accuracy": 0.2, "iterations": [0.9, 0.5, 0.3, 0.2, 0.2]},
                            {"eps": 0.5, "accuracy": 0.05, "iterations": [0.9, 0.2, 0.1, 0.05, 0.05]},
                            {"eps": 1.0, "accuracy": 0.0, "iterations": [0.9, 0.1, 0.0, 0.0, 0.0]}],
              "square": {"eps": 0.1, "queries": 1000, "accuracy": 0.35}}
    return evaluation, probes


def test_consistent_evidence_passes_every_check() -> None:
    result = assess(*_evidence())
    assert result["verdict"] == "not detected" and result["failed"] == []
    assert {c["status"] for c in result["checks"]} == {"pass"}
    assert not result["paper_protocol_masked"]


def _fail(mutate) -> dict[str, Any]:
    evaluation, probes = copy.deepcopy(_evidence())
    mutate(evaluation, probes)
    return assess(evaluation, probes)


@pytest.mark.parametrize(("mutate", "check"), [
    (lambda e, p: e["results"][4].update(accuracy=0.60), "iterative >= one-step"),
    (lambda e, p: e["results"][3].update(accuracy=0.95), "white-box >= transfer, oblivious"),
    (lambda e, p: p["eps_sweep"][2].update(accuracy=0.30), "unbounded eps -> 0"),
    (lambda e, p: p["eps_sweep"][1].update(accuracy=0.60), "unbounded eps -> 0"),
    (lambda e, p: p["square"].update(accuracy=0.02), "gradient-free <= gradient"),
    (lambda e, p: p["randomness"].update(detected=True, max_abs_difference=0.1), "randomness -> EOT"),
    (lambda e, p: p["randomness"].update(declared=True, detected=True), "randomness -> EOT"),
    (lambda e, p: p["zero_gradient"].update(adaptive=0.3), "non-zero gradients"),
])
def test_each_check_fails_on_its_evidence(mutate, check: str) -> None:
    result = _fail(mutate)
    assert result["verdict"] == "suspected" and result["failed"] == [check]


def test_autoattack_does_not_count_as_a_gradient_attack() -> None:
    """AutoAttack runs Square itself: beside a strong Square it must not hide the gap."""
    def strong_square(e: dict, p: dict) -> None:
        p["square"].update(accuracy=0.02)
        e["results"].append(_row("autoattack", "autoattack", "whitebox", 0.01))

    assert _fail(strong_square)["failed"] == ["gradient-free <= gradient"]


def test_randomized_with_eot_passes() -> None:
    def eot(e: dict, p: dict) -> None:
        p["randomness"].update(declared=True, detected=True, max_abs_difference=0.2)
        for r in e["results"]:
            r["eot_samples"] = 8

    assert _fail(eot)["verdict"] == "not detected"


def test_differences_within_the_margin_are_noise() -> None:
    assert margin(0.5, 100, 0.5, 100) == pytest.approx(2 * (0.5 / 100 ** 0.5) * 2 ** 0.5)
    assert margin(1.0, 10, 1.0, 10) == pytest.approx(0.1)  # never below one image
    result = _fail(lambda e, p: e["results"][4].update(accuracy=0.45))  # 5 points above FGSM's 40
    assert result["verdict"] == "not detected"


def test_missing_evidence_is_not_run_and_paper_protocol_is_judged_apart() -> None:
    def strip(e: dict, p: dict) -> None:
        e["results"] = [r for r in e["results"] if r["attack"] != "fgsm"]
        p["square"] = None
        e["results"].append(_row("pgd", "pgd", "whitebox", 0.99, source="autograd"))
        p["zero_gradient"]["autograd"] = 1.0

    result = _fail(strip)
    status = {c["name"]: c["status"] for c in result["checks"]}
    assert status["gradient-free <= gradient"] == "not run"
    assert status["iterative >= one-step"] == "pass"  # the iteration curve still falls
    assert status["paper protocol (autograd) not masked"] == "fail"
    assert result["paper_protocol_masked"] and result["verdict"] == "not detected"
