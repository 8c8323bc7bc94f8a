"""A known-answer purifier (shattered gradients): binarizes each pixel at 0.5 through autograd's
own rounding, so its gradient is zero almost everywhere, and declares itself differentiable, so
no BPDA rescues the attack. The instrument must call its masking *suspected*. Not a defense."""

from __future__ import annotations

from typing import Literal

import torch

from repurify.defenses.base import Purifier
from repurify.defenses.registry import PurifierDef
from repurify.schema import Strict


class ThresholdSpec(Strict):
    kind: Literal["threshold"]


class Threshold(Purifier):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)


PURIFIER = PurifierDef(kind="threshold", spec=ThresholdSpec, purifier=Threshold,
                       build=lambda spec, ctx: Threshold(), example={"kind": "threshold"},
                       known_answer="suspected")
