"""Median smoothing over ``kernel`` x ``kernel`` windows, reflect-padded (Xu et al. 2018)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from repurify.defenses.base import Purifier
from repurify.defenses.registry import PurifierDef
from repurify.schema import Strict, odd


class MedianSpec(Strict):
    kind: Literal["median_filter"]
    kernel: int = Field(ge=1)

    _kernel_odd = field_validator("kernel")(odd)


class MedianFilter(Purifier):
    """Differentiable almost everywhere: the gradient flows to each window's median pixel."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, pad = self.kernel, self.kernel // 2
        n, c, h, w = x.shape
        patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="reflect"), k)  # n, c*k*k, h*w
        return patches.view(n, c, k * k, h * w).median(dim=2).values.view(n, c, h, w)


PURIFIER = PurifierDef(kind="median_filter", spec=MedianSpec, purifier=MedianFilter,
                       build=lambda spec, ctx: MedianFilter(spec.kernel),
                       example={"kind": "median_filter", "kernel": 3})
