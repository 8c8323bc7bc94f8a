"""Feature squeezing by colour-depth reduction to ``bits`` bits (Xu et al. 2018)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from repurify.defenses.base import Purifier, nondifferentiable
from repurify.defenses.registry import PurifierDef
from repurify.schema import Strict


class BitDepthSpec(Strict):
    kind: Literal["bit_depth"]
    bits: int = Field(ge=1, le=8)


class BitDepth(Purifier):
    """Rounds each pixel to one of 2^bits levels; BPDA passes its gradient as the identity."""

    differentiable = False

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.levels = 2**bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nondifferentiable(lambda t: (t * self.levels).round() / self.levels, x)


PURIFIER = PurifierDef(kind="bit_depth", spec=BitDepthSpec, purifier=BitDepth,
                       build=lambda spec, ctx: BitDepth(spec.bits), example={"kind": "bit_depth", "bits": 3})
