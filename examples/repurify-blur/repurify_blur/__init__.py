"""Two example purifiers for repurify's plugin interface: one deterministic, one randomized."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from repurify.defenses import BuildContext, Purifier, PurifierDef
from repurify.schema import Strict


class GaussianBlurSpec(Strict):
    kind: Literal["gaussian_blur"]
    sigma: float = Field(gt=0)  # in pixels; the kernel spans 3 sigma either side


class GaussianBlur(Purifier):
    """A separable Gaussian blur, reflect-padded: differentiable, deterministic."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        radius = max(1, round(3 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-t**2 / (2 * sigma**2))
        self.register_buffer("kernel", kernel / kernel.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, r = x.shape[1], len(self.kernel) // 2
        k = self.kernel.to(x.dtype)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                     groups=c)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                        groups=c)


class RandomNoiseSpec(Strict):
    kind: Literal["random_noise"]
    sigma: float = Field(gt=0)  # on [0,1] pixels


class RandomNoise(Purifier):
    """Gaussian noise from the purifier's own seeded generator, clipped to [0,1]: randomized."""

    randomized = True
    independent_rows = True  # noise drawn per pixel of every row

    def __init__(self, sigma: float, seed: int) -> None:
        super().__init__()
        self.sigma = sigma
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.gen).to(x.device, x.dtype)
        return (x + self.sigma * noise).clamp(0, 1)


def _blur(spec: GaussianBlurSpec, ctx: BuildContext) -> GaussianBlur:
    return GaussianBlur(spec.sigma)


def _noise(spec: RandomNoiseSpec, ctx: BuildContext) -> RandomNoise:
    return RandomNoise(spec.sigma, ctx.seed)


GAUSSIAN_BLUR = PurifierDef(kind="gaussian_blur", spec=GaussianBlurSpec, purifier=GaussianBlur,
                            build=_blur, example={"kind": "gaussian_blur", "sigma": 1.0})
RANDOM_NOISE = PurifierDef(kind="random_noise", spec=RandomNoiseSpec, purifier=RandomNoise,
                           build=_noise, example={"kind": "random_noise", "sigma": 0.1})
