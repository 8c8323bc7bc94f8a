"""Progress a researcher can watch: a tqdm bar on a terminal; anywhere else (DVC, Snakemake,
SLURM, CI, ``tail -f`` on a stage log) plain lines with the elapsed time and an ETA, at most one
per ``$REPURIFY_PROGRESS_S`` seconds (default 30) and always one for the last item."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


class Lines:
    """Iterate ``items``, printing ``desc: done/total unit, elapsed, ETA [, postfix]`` to stderr."""

    def __init__(self, items: Iterable[T], desc: str, unit: str, interval: float) -> None:
        self.items, self.desc, self.unit, self.interval = items, desc, unit, interval
        self.total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        self.postfix = ""

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def __iter__(self) -> Iterator[T]:
        start = last = time.monotonic()
        for done, item in enumerate(self.items, 1):
            yield item
            now = time.monotonic()
            if now - last >= self.interval or done == self.total:
                elapsed = now - start
                of = f"/{self.total}" if self.total else ""
                eta = (f", ETA {_clock(elapsed / done * (self.total - done))}" if self.total else "")
                print(f"{self.desc}: {done}{of} {self.unit}, {_clock(elapsed)} elapsed{eta}"
                      + (f", {self.postfix}" if self.postfix else ""), file=sys.stderr, flush=True)
                last = now


def progress(items: Iterable[T], desc: str, unit: str = "step") -> Lines | tqdm:
    """A tqdm bar when stderr is a terminal, else :class:`Lines`."""
    if sys.stderr.isatty():
        return tqdm(items, desc=desc, unit=unit, leave=False)
    return Lines(items, desc, unit, float(os.environ.get("REPURIFY_PROGRESS_S", "30")))


def note(text: str) -> None:
    """Print a line without breaking a bar on the terminal, flushed at once for log files."""
    tqdm.write(text)
    sys.stdout.flush()
