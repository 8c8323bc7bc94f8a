"""Worst-case robust accuracy: per image, the lowest score any attack at the budget reached.

On the shared adaptive image set (the first ``n`` evaluated images) an image counts as robust
only if it survives every attack row whose perturbations lie in the budget: every white-box attack
(both gradient protocols, every restart, AutoAttack, the adaptive set) and the transferred and
oblivious examples, which are adversarial examples in the same ball. Minimum-norm attacks (C&W,
no eps) are left out. For a randomized defense an image's score is its share of correct draws,
so the worst case is the mean over images of the per-image minimum, and ``accuracy_all_draws``
the share of images correct in every draw under every attack.
"""

from __future__ import annotations

from typing import Any

from repurify.stats import standard_error

TOLERANCE = 1e-9  # eps comparison


def in_budget(row: dict[str, Any], eps: float, norm: str) -> bool:
    return row.get("eps") is not None and row["norm"] == norm and row["eps"] <= eps + TOLERANCE


def label(row: dict[str, Any]) -> str:
    """``attack (threat model[, source])``: a row's name in the worst case's evidence."""
    extra = row.get("source")
    return f"{row['attack']} ({row['threat_model']}{', ' + extra if extra else ''})"


def worst_case(rows: list[dict[str, Any]], n: int, eps: float, norm: str) -> dict[str, Any]:
    """The per-image minimum over every in-budget row, on the first ``n`` images."""
    used = [r for r in rows if in_budget(r, eps, norm) and len(r["correct"]) >= n]
    if not used:
        raise ValueError(f"no attack row at eps <= {eps:g} ({norm}) covers the first {n} images")
    scores = [min(r["correct"][i] for r in used) for i in range(n)]
    broke = {label(r): sum(r["correct"][i] < 1 for i in range(n)) for r in used}
    return {"accuracy": sum(scores) / n, "se": standard_error(scores),
            "accuracy_all_draws": sum(s == 1 for s in scores) / n, "n": n, "eps": eps, "norm": norm,
            "attacks": len(used), "correct": scores,
            "strongest": label(min(used, key=_strength(n))), "broken_by": broke}


def _strength(n: int):
    """Sort key of the strongest row: lowest accuracy on the images, white-box rows first on ties."""
    return lambda r: (sum(r["correct"][:n]), r["threat_model"] != "whitebox")
