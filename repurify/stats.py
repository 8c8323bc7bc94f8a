"""Paired statistics over the same images: standard errors and the exact sign test.

Every accuracy the instrument compares is a per-image vector on one shared image set (0/1 for a
deterministic defense, the share of correct draws for a randomized one), so two attacks are
compared image by image. The sign test on the images where they disagree is McNemar's exact test
for 0/1 outcomes and its natural extension to multi-draw scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

ALPHA = 0.05  # one-sided significance of a paired difference (used by the verdicts)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean accuracy: sqrt(p(1-p)/n) for 0/1 outcomes."""
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values) / len(values))


def row_standard_error(row: dict) -> float:
    """A result row's standard error; a row without one holds single-draw 0/1 scores: sqrt(p(1-p)/n)."""
    return row["se"] if "se" in row else math.sqrt(row["accuracy"] * (1 - row["accuracy"]) / row["n"])


def sign_test(higher: int, lower: int) -> float:
    """One-sided exact p-value of ``higher`` successes in ``higher + lower`` fair coin flips."""
    n = higher + lower
    return sum(math.comb(n, k) for k in range(higher, n + 1)) / 2 ** n if n else 1.0


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int]:
    """Compare per-image accuracies ``a`` and ``b`` on the same images: how many images each
    is higher on, and the one-sided p-value that ``a`` is above ``b``."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison over different image sets ({len(a)} vs {len(b)} images)")
    up = sum(x > y for x, y in zip(a, b, strict=True))
    down = sum(x < y for x, y in zip(a, b, strict=True))
    return {"higher": up, "lower": down, "p": sign_test(up, down)}
