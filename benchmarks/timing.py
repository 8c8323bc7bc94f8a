"""Wall-clock timing shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(*fns: Callable[[], object], repeats: int) -> list[float]:
    """Median wall time of each ``fn()`` over ``repeats`` rounds, after one warm-up round; the
    functions alternate within a round, so a slow spell of the machine hits both alike."""
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats + 1):
        for fn, ts in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if r:
                ts.append(time.perf_counter() - start)
    return [statistics.median(ts) for ts in times]
