"""Seeding and device selection shared by every stage."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from repurify.errors import ParamsError


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, ask torch for deterministic kernels, return a generator."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    """Map ``auto|cpu|cuda`` to a device; ``cuda`` without a GPU is an error, not a fallback."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device: 'cuda' requested but no CUDA device is visible; use 'auto' or 'cpu'")
    if requested not in {"cpu", "cuda"}:
        raise ParamsError(f"device: expected auto, cpu or cuda, got {requested!r}")
    return torch.device(requested)
