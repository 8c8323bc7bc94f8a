"""JPEG compression at ``quality`` (Dziugaite et al. 2016; Guo et al. 2018)."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from repurify.defenses.base import Purifier, nondifferentiable
from repurify.defenses.registry import PurifierDef
from repurify.schema import Strict


class JpegSpec(Strict):
    kind: Literal["jpeg"]
    quality: int = Field(ge=1, le=100)


class Jpeg(Purifier):
    """The codec's round trip through 8-bit pixels; BPDA passes its gradient as the identity."""

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


PURIFIER = PurifierDef(kind="jpeg", spec=JpegSpec, purifier=Jpeg,
                       build=lambda spec, ctx: Jpeg(spec.quality), example={"kind": "jpeg", "quality": 75})
