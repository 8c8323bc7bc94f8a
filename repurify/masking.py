"""Gradient-masking verdicts: the checklist of Carlini et al. (2019, Sec. 5.2) and AutoAttack's
``checks.py``, applied to one defense's evaluation and probes.

Each check passes, fails, is ``weak`` (it ran below the budget that makes it telling) or is
``not run`` (its evidence is missing). Accuracies are compared image by image on the shared
adaptive image set with the paired sign test (McNemar's exact test for 0/1 scores,
:mod:`repurify.stats`): a difference counts only at one-sided p < ``ALPHA``. The verdict is
``suspected`` if a check fails, ``inconclusive`` (naming what did not run) if evidence the
checklist needs is missing, else ``not detected``. ``autograd protocol`` judges a white-box
evaluation through autograd's own gradients at the non-differentiable layers (EGC-FL's paper's
protocol; GCLN's paper does not state its own), not the defense.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

from repurify.stats import ALPHA, paired

UNBOUNDED = 0.05  # "~0": the highest accuracy allowed at the unbounded eps
ZERO_ENTRIES = 0.5  # the largest share of zero input-gradient entries before gradients count as masked
EOT_SNR = 1.0  # the smallest median signal-to-noise of the EOT gradient
SQUARE_QUERIES = 5000  # AutoAttack's standard budget: fewer queries make the gradient-free check weak
ITERATIVE = ("bim", "pgd", "mifgsm")
# AutoAttack warnings that a declared-randomized defense raises by construction
EXPECTED_RANDOMIZED = ("randomized defense",)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | fail | weak | not run
    evidence: str


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


class Images:
    """Per-image scores of rows and probes on the first ``n`` (adaptive) images."""

    def __init__(self, n: int) -> None:
        self.n = n

    def of(self, row: dict[str, Any]) -> list[float] | None:
        scores = row.get("correct")
        return None if scores is None or len(scores) < self.n else scores[:self.n]

    def above(self, a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, str] | None:
        """Is ``a``'s accuracy above ``b``'s beyond noise on the same images? (None: not comparable)"""
        sa, sb = self.of(a), self.of(b)
        if sa is None or sb is None:
            return None
        test = paired(sa, sb)
        text = (f"{_pct(sum(sa) / self.n)} vs {_pct(sum(sb) / self.n)} "
                f"(+{test['higher']}/-{test['lower']} images of {self.n}, p {test['p']:.2g})")
        return test["p"] < ALPHA, text


def _verdict(name: str, failures: list[str], passes: list[str], missing: str) -> Check:
    if failures:
        return Check(name, "fail", "; ".join(failures))
    return Check(name, "pass", "; ".join(passes)) if passes else Check(name, "not run", missing)


def _adaptive(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["threat_model"] == "whitebox" and r.get("source") != "autograd"]


def _compare(images: Images, worse: dict[str, Any], better: dict[str, Any], label: str,
             fails: list[str], passes: list[str]) -> None:
    """Fail when ``worse`` (the one that should be stronger) is above ``better``."""
    result = images.above(worse, better)
    if result is not None:
        (fails if result[0] else passes).append(f"{label}: {result[1]}")


def iterative_vs_one_step(rows: list[dict[str, Any]], probes: dict[str, Any], images: Images) -> Check:
    """Iterative attacks at least as strong as FGSM (same eps); the attack's last iterate at least
    as strong as its first step."""
    wb = _adaptive(rows)
    fails: list[str] = []
    passes: list[str] = []
    for f in (r for r in wb if r["kind"] == "fgsm"):
        for it in (r for r in wb if r["kind"] in ITERATIVE and r["eps"] == f["eps"]
                   and r["targeted"] == f["targeted"]):
            _compare(images, it, f, f"{it['attack']} vs fgsm", fails, passes)
    for p in probes["eps_sweep"]:
        if "first_step" in p:
            _compare(images, p, {"correct": p["first_step"]},
                     f"{probes['attack']} after {probes['steps']} steps vs after 1", fails, passes)
    return _verdict("iterative >= one-step", fails, passes, "no FGSM and iterative white-box rows")


def whitebox_vs_weaker(rows: list[dict[str, Any]], images: Images) -> Check:
    """The adaptive attack at least as strong as the same attack made without the defense."""
    fails: list[str] = []
    passes: list[str] = []
    for wb in _adaptive(rows):
        for other in (r for r in rows if r["attack"] == wb["attack"]
                      and r["threat_model"] in ("oblivious", "blackbox")):
            _compare(images, wb, other, f"{wb['attack']}: white-box vs {other['threat_model']} "
                     f"({other.get('source', 'target')})", fails, passes)
    return _verdict("white-box >= transfer, oblivious", fails, passes,
                    "no attack ran both white-box and oblivious/black-box")


def unbounded_eps(probes: dict[str, Any], images: Images) -> Check:
    """Accuracy reaches ~0 at the unbounded eps and never rises with eps."""
    sweep = probes["eps_sweep"]
    fails: list[str] = []
    for a, b in pairwise(sweep):
        if (result := images.above(b, a)) is not None and result[0]:
            fails.append(f"accuracy rises from eps {a['eps']:.3g} to {b['eps']:.3g}: {result[1]}")
    last = sweep[-1]
    text = f"{_pct(last['accuracy'])} at eps {last['eps']:.3g} ({probes['steps']} steps)"
    if last["accuracy"] > UNBOUNDED:
        fails.append(f"{text}, above {_pct(UNBOUNDED)}")
    return _verdict("unbounded eps -> 0", fails, [text], "")


def gradient_free(rows: list[dict[str, Any]], probes: dict[str, Any], images: Images,
                  randomized: bool) -> Check:
    """Square (no gradients) no stronger than the gradient attacks at the same eps; weak below
    AutoAttack's query budget."""
    name, sq = "gradient-free <= gradient", probes.get("square")
    if sq is None:
        return Check(name, "not run", "Square not run (square_queries 0)")
    # AutoAttack is left out: it contains Square, so it can never be weaker than Square alone
    grad = [r for r in _adaptive(rows) if r["kind"] in ("fgsm", *ITERATIVE)
            and math.isclose(r["eps"], sq["eps"]) and images.of(r) is not None]
    grad += [{**p, "attack": f"{probes['attack']} (sweep)"} for p in probes["eps_sweep"]
             if math.isclose(p["eps"], sq["eps"])]
    if not grad:
        return Check(name, "not run", "no gradient attack at Square's eps")
    best = min(grad, key=lambda r: sum(images.of(r)))
    stronger, text = images.above(best, sq)
    text = f"strongest gradient attack {best['attack']} vs Square ({sq['queries']} queries): {text}"
    if stronger:
        return Check(name, "fail", text)
    weak = []
    if sq["queries"] < SQUARE_QUERIES:
        weak.append(f"{sq['queries']} queries, below AutoAttack's {SQUARE_QUERIES}")
    if randomized and sq.get("eot_samples", 1) < 2:
        weak.append("a randomized defense queried without EOT")
    return Check(name, "weak", f"{text}; weak: {', '.join(weak)}") if weak else Check(name, "pass", text)


def randomness(evaluation: dict[str, Any], probes: dict[str, Any]) -> Check:
    """Randomness is declared where present, and then every white-box attack used EOT."""
    r = probes["randomness"]
    if r["detected"] and not r["declared"]:
        return Check("randomness -> EOT", "fail", "two purifications of the same images differ (max "
                     f"{r['max_abs_difference']:.3g}) but the purifier is declared deterministic: no EOT")
    if not r["declared"]:
        return Check("randomness -> EOT", "pass", "deterministic (two purifications identical)")
    eot = sorted({row.get("eot_samples", 1) for row in _adaptive(evaluation["results"])})
    text = (f"randomized (detected: {r['detected']}); white-box EOT samples {eot}; each image "
            f"scored on {evaluation.get('draws', 1)} draws")
    return Check("randomness -> EOT", "fail" if not eot or min(eot) < 2 else "pass", text)


def nonzero_gradients(probes: dict[str, Any]) -> Check:
    """The attack's gradients are non-zero (AutoAttack's zero-gradient check, per image and per
    entry) and, for a randomized defense, carry a direction above the noise of the EOT draws."""
    zero = probes["zero_gradient"]
    images, entries = zero["adaptive"]["images"], zero["adaptive"]["entries"]
    text = (f"under the attack's gradients {_pct(images)}% of images have an all-zero input gradient, "
            f"{_pct(entries)}% of entries are zero")
    fails = [text] if images > 0 or entries > ZERO_ENTRIES else []
    passes = [] if fails else [text]
    if (snr := zero.get("eot_snr")) is not None:
        t = f"EOT gradient signal-to-noise {snr:.3g} (median over images, {probes['eot_samples']} draws)"
        (fails if snr < EOT_SNR else passes).append(t)
    return _verdict("non-zero gradients", fails, passes, "")


def converged(evaluation: dict[str, Any], images: Images) -> Check:
    """The adaptive PGD has converged: its last doubling of steps (first restart) and of restarts
    lowers accuracy by no more than noise, on the same images."""
    conv = evaluation.get("convergence")
    if conv is None:
        return Check("attack converged", "not run", "no adaptive attack set (evaluation.adaptive)")
    fails: list[str] = []
    passes: list[str] = []
    for axis in ("steps", "restarts"):
        a, b = conv[axis][-2], conv[axis][-1]
        _compare(images, a, b, f"{conv['attack']} at {a[axis]} vs {b[axis]} {axis}", fails, passes)
    curve = lambda axis: ", ".join(f"{p[axis]}: {_pct(p['accuracy'])}" for p in conv[axis])  # noqa: E731
    text = f"steps {curve('steps')}; restarts {curve('restarts')}"
    check = _verdict("attack converged", fails, passes, "")
    return Check(check.name, check.status, f"{check.evidence} ({text})")


def eot_converged(evaluation: dict[str, Any], probes: dict[str, Any], images: Images) -> Check:
    """For a randomized defense, more EOT draws stop helping: the last doubling of the probe's
    draws lowers accuracy by no more than noise."""
    if not evaluation.get("randomized"):
        return Check("EOT converged", "pass", "deterministic: no EOT needed")
    probe_points = probes.get("eot_probe")
    if not probe_points:
        return Check("EOT converged", "not run", "no EOT probe (checks.eot_probe)")
    fails: list[str] = []
    passes: list[str] = []
    a, b = probe_points[-2], probe_points[-1]
    _compare(images, a, b, f"EOT-{a['samples']} vs EOT-{b['samples']}", fails, passes)
    curve = ", ".join(f"{p['samples']}: {_pct(p['accuracy'])}" for p in probe_points)
    check = _verdict("EOT converged", fails, passes, "")
    return Check(check.name, check.status, f"{check.evidence} (draws: accuracy {curve})")


def autoattack_warnings(evaluation: dict[str, Any]) -> Check:
    """AutoAttack's own checks (its ``checks.py`` warnings) raised nothing unexpected."""
    runs = [r for r in evaluation["results"] if "autoattack_warnings" in r]
    if not runs:
        return Check("AutoAttack's checks", "not run", "AutoAttack did not run white-box")
    seen = list(dict.fromkeys(w for r in runs for w in r["autoattack_warnings"]))
    expected = [w for w in seen if evaluation.get("randomized") and any(e in w for e in EXPECTED_RANDOMIZED)]
    other = [w for w in seen if w not in expected]
    text = "; ".join(other) if other else (f"no warnings in {len(runs)} run(s)" if not expected else
                                          f"only the expected one: {expected[0]}")
    return Check("AutoAttack's checks", "fail" if other else "pass", text)


def autograd_protocol(rows: list[dict[str, Any]], probes: dict[str, Any],
                      images: Images) -> Check | None:
    """Autograd's gradients at the non-differentiable layers against BPDA's, attack by attack."""
    autograd = [r for r in rows if r.get("source") == "autograd"]
    if not autograd:
        return None
    adaptive = {r["attack"]: r for r in _adaptive(rows)}
    fails: list[str] = []
    passes: list[str] = []
    for r in autograd:
        if (a := adaptive.get(r["attack"])) is not None:
            _compare(images, r, a, f"{r['attack']}: autograd vs BPDA", fails, passes)
    if (zero := probes["zero_gradient"].get("autograd")) is not None:
        text = f"{_pct(zero['images'])}% of images get an all-zero gradient through autograd"
        (fails if zero["images"] > 0 else passes).append(text)
    return _verdict("autograd protocol not masked", fails, passes, "")


def assess(evaluation: dict[str, Any], probes: dict[str, Any]) -> dict[str, Any]:
    """Every check and the verdict: ``suspected`` if a check of the defense fails, ``inconclusive``
    if one did not run, else ``not detected`` (its ``weak`` checks listed)."""
    rows, images = evaluation["results"], Images(probes["n"])
    checks = [iterative_vs_one_step(rows, probes, images), whitebox_vs_weaker(rows, images),
              unbounded_eps(probes, images),
              gradient_free(rows, probes, images, bool(evaluation.get("randomized"))),
              randomness(evaluation, probes), nonzero_gradients(probes), converged(evaluation, images),
              eot_converged(evaluation, probes, images), autoattack_warnings(evaluation)]
    failed = [c.name for c in checks if c.status == "fail"]
    missing = [c.name for c in checks if c.status == "not run"]
    verdict = "suspected" if failed else "inconclusive" if missing else "not detected"
    if (protocol := autograd_protocol(rows, probes, images)) is not None:
        checks.append(protocol)
    return {"verdict": verdict, "failed": failed, "not_run": missing,
            "weak": [c.name for c in checks if c.status == "weak"],
            "paper_protocol_masked": protocol is not None and protocol.status == "fail",
            "checks": [asdict(c) for c in checks]}
