"""A known-answer purifier (stochastic gradients): adds Gaussian noise of ``sigma`` to every
pixel and declares itself deterministic. The instrument must call its masking *suspected*
(randomness that EOT was not told about). Not a defense."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from repurify.defenses.base import Purifier
from repurify.defenses.registry import PurifierDef
from repurify.schema import Strict


class InputNoiseSpec(Strict):
    kind: Literal["input_noise"]
    sigma: float = Field(default=0.3, gt=0)


class InputNoise(Purifier):
    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.sigma * torch.randn_like(x)).clamp(0, 1)


PURIFIER = PurifierDef(kind="input_noise", spec=InputNoiseSpec, purifier=InputNoise,
                       build=lambda spec, ctx: InputNoise(spec.sigma), example={"kind": "input_noise"},
                       known_answer="suspected")
