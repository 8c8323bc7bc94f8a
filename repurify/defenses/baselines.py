"""The cheap baselines of the papers' tables: JPEG, bit-depth reduction, median filtering."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from repurify.defenses.base import Purifier, nondifferentiable


class Jpeg(Purifier):
    """JPEG compression at ``quality`` (Dziugaite et al. 2016; Guo et al. 2018)."""

    differentiable = False

    def __init__(self, quality: int) -> None:
        super().__init__()
        self.quality = quality

    def _codec(self, x: torch.Tensor) -> torch.Tensor:
        u8 = (x * 255).round().clamp(0, 255).to(torch.uint8).cpu()
        out = [decode_jpeg(encode_jpeg(img, quality=self.quality)) for img in u8]
        return torch.stack(out).to(x.device, x.dtype) / 255

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nondifferentiable(self._codec, x)


class BitDepth(Purifier):
    """Feature squeezing by colour-depth reduction to ``bits`` bits (Xu et al. 2018)."""

    differentiable = False

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.levels = 2**bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nondifferentiable(lambda t: (t * self.levels).round() / self.levels, x)


class MedianFilter(Purifier):
    """Median smoothing over ``kernel`` x ``kernel`` windows, reflect-padded (Xu et al. 2018).

    Differentiable almost everywhere: the gradient flows to each window's median pixel.
    """

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, pad = self.kernel, self.kernel // 2
        n, c, h, w = x.shape
        patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="reflect"), k)  # n, c*k*k, h*w
        return patches.view(n, c, k * k, h * w).median(dim=2).values.view(n, c, h, w)
