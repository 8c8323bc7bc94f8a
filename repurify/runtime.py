"""Seeding and device selection shared by every stage."""

from __future__ import annotations

import random

import numpy as np
import torch

from repurify.errors import ParamsError


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, ask torch for deterministic kernels and full-fp32
    convolutions, return a generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False  # ours: cuDNN's TF32 default rounds to 10 mantissa bits
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
