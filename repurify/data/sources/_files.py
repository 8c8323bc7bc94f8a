"""What the file-based loaders share: the presence check, its message, array conversions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from repurify.errors import DataUnavailableError


def unavailable(name: str, root: Path, expected: list[str], reason: str) -> DataUnavailableError:
    files = "\n".join(f"  {root / f}" for f in expected)
    return DataUnavailableError(
        f"{name}: dataset files not found under {root} and the download failed ({reason}).\n"
        f"Put the files at:\n{files}\n"
        f"(or set profiles.<profile>.data.root to the folder that holds them)."
    )


def ensure(name: str, root: Path, expected: list[str], download: bool, fetch: Callable[[], object]) -> None:
    """Make sure ``expected`` files exist under ``root``, downloading once if allowed."""
    if all((root / f).exists() for f in expected):
        return
    if not download:
        raise unavailable(name, root, expected, "download disabled by data.download: false")
    try:
        fetch()
    except Exception as exc:  # network errors surface as URLError, OSError, RuntimeError ...
        raise unavailable(name, root, expected, f"{type(exc).__name__}: {exc}") from None
    if not all((root / f).exists() for f in expected):
        raise unavailable(name, root, expected, "download finished but files are missing")


def labels(values: object) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.int64)


def hwc_to_nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
