"""Gradient-masking verdicts: the checklist of Carlini et al. (2019, Sec. 5.2) and AutoAttack's
``checks.py``, applied to one defense's evaluation and probes.

Each check passes, fails, or is not run (its evidence is missing in this profile). Two accuracies
differ only beyond :func:`margin`, two standard errors of their difference, so that a few images
of noise on small ``n`` do not fail a check. A failed check is a sign of gradient masking: the
white-box numbers then overstate robustness. ``paper protocol`` judges the paper's own white-box
evaluation (autograd's gradients at the non-differentiable layers), not the defense.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

Z = 2.0  # standard errors between two accuracies before they count as different
UNBOUNDED = 0.05  # "~0": the highest accuracy allowed at the unbounded eps
ITERATIVE = ("bim", "pgd", "mifgsm")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | fail | not run
    evidence: str


def margin(p: float, n: int, q: float, m: int) -> float:
    """``Z`` standard errors of ``p - q``, at least one image of the smaller sample."""
    return max(Z * math.sqrt(p * (1 - p) / n + q * (1 - q) / m), 1 / min(n, m))


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _worse(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Is row ``a``'s accuracy above row ``b``'s beyond the margin?"""
    return a["accuracy"] > b["accuracy"] + margin(a["accuracy"], a["n"], b["accuracy"], b["n"])


def _verdict(name: str, failures: list[str], passes: list[str], missing: str) -> Check:
    if failures:
        return Check(name, "fail", "; ".join(failures))
    return Check(name, "pass", "; ".join(passes)) if passes else Check(name, "not run", missing)


def _adaptive(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["threat_model"] == "whitebox" and r.get("source") != "autograd"]


def iterative_vs_one_step(rows: list[dict[str, Any]], probes: dict[str, Any]) -> Check:
    """Iterative attacks at least as strong as FGSM (same eps); the iteration curve falls."""
    wb = _adaptive(rows)
    fails, passes = [], []
    for f in (r for r in wb if r["kind"] == "fgsm"):
        for it in (r for r in wb if r["kind"] in ITERATIVE and r["eps"] == f["eps"]
                   and r["targeted"] == f["targeted"]):
            text = f"{it['attack']} {_pct(it['accuracy'])} vs fgsm {_pct(f['accuracy'])}"
            (fails if _worse(it, f) else passes).append(text)
    for p in probes["eps_sweep"]:
        if math.isclose(p["eps"], probes["attack_eps"], rel_tol=1e-9) and len(p["iterations"]) > 2:
            one = {"accuracy": p["iterations"][1], "n": probes["n"]}
            last = {"accuracy": p["accuracy"], "n": probes["n"]}
            text = (f"{probes['attack']} after 1 step {_pct(one['accuracy'])}, after "
                    f"{probes['steps']} {_pct(last['accuracy'])}")
            (fails if _worse(last, one) else passes).append(text)
    return _verdict("iterative >= one-step", fails, passes, "no FGSM and iterative white-box rows")


def whitebox_vs_weaker(rows: list[dict[str, Any]]) -> Check:
    """The adaptive attack at least as strong as the same attack made without the defense."""
    fails, passes = [], []
    for wb in _adaptive(rows):
        for other in (r for r in rows if r["attack"] == wb["attack"]
                      and r["threat_model"] in ("oblivious", "blackbox")):
            text = (f"{wb['attack']}: white-box {_pct(wb['accuracy'])} vs {other['threat_model']} "
                    f"({other.get('source', 'target')}) {_pct(other['accuracy'])}")
            (fails if _worse(wb, other) else passes).append(text)
    return _verdict("white-box >= transfer, oblivious", fails, passes,
                    "no attack ran both white-box and oblivious/black-box")


def unbounded_eps(probes: dict[str, Any]) -> Check:
    """Accuracy reaches ~0 at the unbounded eps and never rises with eps."""
    sweep, n = probes["eps_sweep"], probes["n"]
    fails = [f"accuracy rises from {_pct(a['accuracy'])} at eps {a['eps']:.3g} to {_pct(b['accuracy'])} "
             f"at {b['eps']:.3g}" for a, b in pairwise(sweep)
             if _worse({**b, "n": n}, {**a, "n": n})]
    last = sweep[-1]
    text = f"{_pct(last['accuracy'])} at eps {last['eps']:.3g} ({probes['steps']} steps)"
    if last["accuracy"] > UNBOUNDED:
        fails.append(f"{text}, above {_pct(UNBOUNDED)}")
    return _verdict("unbounded eps -> 0", fails, [text], "")


def gradient_free(rows: list[dict[str, Any]], probes: dict[str, Any]) -> Check:
    """Square (no gradients) no stronger than the gradient attacks at the same eps."""
    sq = probes.get("square")
    if sq is None:
        return Check("gradient-free <= gradient", "not run", "Square not run (square_queries 0)")
    # AutoAttack is left out: it contains Square, so it can never be weaker than Square alone
    grad = [r for r in _adaptive(rows) if r["kind"] in ("fgsm", *ITERATIVE)
            and math.isclose(r["eps"], sq["eps"])]
    grad += [{"attack": f"{probes['attack']} (sweep)", "accuracy": p["accuracy"], "n": probes["n"]}
             for p in probes["eps_sweep"] if math.isclose(p["eps"], sq["eps"])]
    if not grad:
        return Check("gradient-free <= gradient", "not run", "no gradient attack at Square's eps")
    best = min(grad, key=lambda r: r["accuracy"])
    square_row = {"accuracy": sq["accuracy"], "n": probes["n"]}
    text = (f"Square ({sq['queries']} queries) {_pct(sq['accuracy'])} vs strongest gradient attack "
            f"{best['attack']} {_pct(best['accuracy'])}")
    return _verdict("gradient-free <= gradient", [text] if _worse(best, square_row) else [], [text], "")


def randomness(evaluation: dict[str, Any], probes: dict[str, Any]) -> Check:
    """Randomness is declared where present, and then every white-box attack used EOT."""
    r = probes["randomness"]
    if r["detected"] and not r["declared"]:
        return Check("randomness -> EOT", "fail", "two purifications of the same images differ (max "
                     f"{r['max_abs_difference']:.3g}) but the purifier is declared deterministic: no EOT")
    if not r["declared"]:
        return Check("randomness -> EOT", "pass", "deterministic (two purifications identical)")
    eot = sorted({row.get("eot_samples", 1) for row in _adaptive(evaluation["results"])})
    text = f"randomized (detected: {r['detected']}); white-box EOT samples {eot}"
    return Check("randomness -> EOT", "fail" if not eot or min(eot) < 2 else "pass", text)


def nonzero_gradients(probes: dict[str, Any]) -> Check:
    """The attack's gradients are non-zero on every image (AutoAttack's zero-gradient check)."""
    zero = probes["zero_gradient"]["adaptive"]
    text = f"{_pct(zero)}% of images have an all-zero input gradient under the attack's gradients"
    return Check("non-zero gradients", "fail" if zero > 0 else "pass", text)


def paper_protocol(rows: list[dict[str, Any]], probes: dict[str, Any]) -> Check | None:
    """Autograd's gradients (the paper's white-box protocol) against BPDA's, attack by attack."""
    autograd = [r for r in rows if r.get("source") == "autograd"]
    if not autograd:
        return None
    adaptive = {r["attack"]: r for r in _adaptive(rows)}
    fails, passes = [], []
    for r in autograd:
        if (a := adaptive.get(r["attack"])) is not None:
            text = f"{r['attack']}: autograd {_pct(r['accuracy'])} vs BPDA {_pct(a['accuracy'])}"
            (fails if _worse(r, a) else passes).append(text)
    if (zero := probes["zero_gradient"].get("autograd")) is not None:
        passes.append(f"{_pct(zero)}% zero gradients through autograd")
        if zero > 0:
            fails.append(f"{_pct(zero)}% of images get an all-zero gradient through autograd")
    return _verdict("paper protocol (autograd) not masked", fails, passes, "")


def assess(evaluation: dict[str, Any], probes: dict[str, Any]) -> dict[str, Any]:
    """Every check, and the verdict: ``suspected`` if a check of the defense fails,
    ``not detected`` if all that ran passed."""
    rows = evaluation["results"]
    checks = [iterative_vs_one_step(rows, probes), whitebox_vs_weaker(rows), unbounded_eps(probes),
              gradient_free(rows, probes), randomness(evaluation, probes), nonzero_gradients(probes)]
    failed = [c.name for c in checks if c.status == "fail"]
    verdict = "suspected" if failed else "not detected"
    if (protocol := paper_protocol(rows, probes)) is not None:
        checks.append(protocol)
    return {"verdict": verdict, "failed": failed,
            "paper_protocol_masked": protocol is not None and protocol.status == "fail",
            "checks": [asdict(c) for c in checks]}
