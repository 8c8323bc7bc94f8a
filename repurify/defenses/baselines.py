"""The cheap baselines of the papers' tables: JPEG, bit-depth reduction, median filtering."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from repurify.defenses.base import Purifier, nondifferentiable


class Jpeg(Purifier):
    """JPEG compression at ``quality`` (Dziugaite et al. 2016; Guo et al. 2018)."""

    differentiable = False

    def __init__(self, quality: int) -> None:
        super().__init__()
        self.quality = quality

    def _roundtrip(self, img: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(
            buf, format="JPEG", quality=self.quality)
        out = np.asarray(Image.open(buf))
        return out[..., None] if out.ndim == 2 else out

    def _codec(self, x: torch.Tensor) -> torch.Tensor:
        u8 = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack([self._roundtrip(img) for img in u8])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255

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
