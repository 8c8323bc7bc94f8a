"""The blockwise orthonormal DCT that EGC-FL (the T of its TDZ layer) and GCLN (Eq. 1) share,
and the two coefficient nonlinearities placed between T and T^-1.

``T`` splits each channel into M x M blocks and applies the orthonormal 2-D
DCT-II to each (GCLN Eq. 1 with M = 8 is exactly this: 1/4 = 2/M). An image
whose side is not a multiple of M is edge-padded to the next multiple and the
padding is cropped after ``T^-1``, so ``T^-1(T(x)) == x`` for every size.

Both nonlinearities run through :func:`straight_through`: autograd's own
gradient by default (the 0/1 mask for the deadzone, 0 for rounding) and the
identity under BPDA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from repurify.defenses.base import straight_through


def dct_matrix(m: int) -> torch.Tensor:
    """The M x M orthonormal DCT-II matrix D (``D @ D.T == I``): row i is frequency i."""
    n = torch.arange(m, dtype=torch.float64)
    d = torch.cos(math.pi * n.view(-1, 1) * (2 * n.view(1, -1) + 1) / (2 * m)) * math.sqrt(2 / m)
    d[0] /= math.sqrt(2)
    return d.float()


class BlockDCT(nn.Module):
    """``T`` (:meth:`forward`) and ``T^-1`` (:meth:`inverse`) on M x M blocks of each channel."""

    def __init__(self, block: int) -> None:
        super().__init__()
        if block < 1:
            raise ValueError(f"DCT block size must be positive, got {block}")
        self.block = block
        self.register_buffer("d", dct_matrix(block), persistent=False)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m = self.block
        return x.view(n, c, h // m, m, w // m, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients of ``x`` (N,C,H,W), edge-padded to multiples of M: ``D X_B D^T``."""
        m = self.block
        pad_h, pad_w = -x.shape[-2] % m, -x.shape[-1] % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        c = torch.einsum("ij,ncajbk,lk->ncaibl", self.d, self._blocks(x), self.d)
        return c.reshape(x.shape)

    def inverse(self, coeffs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Pixels from coefficients (``D^T C_B D``), cropped to the original ``size`` (H, W)."""
        x = torch.einsum("ji,ncajbk,kl->ncaibl", self.d, self._blocks(coeffs), self.d)
        return x.reshape(coeffs.shape)[..., :size[0], :size[1]]


def deadzone(c: torch.Tensor, delta: float) -> torch.Tensor:
    """EGC-FL's eta: 0 on [-delta, delta], the identity elsewhere (Fig. 3, Eq. 3-5)."""
    return straight_through(lambda v: F.hardshrink(v, delta), c)


def quantize(c: torch.Tensor, q: float) -> torch.Tensor:
    """GCLN's RQ (Eq. 2): Round(c / q) * q."""
    return straight_through(lambda v: torch.round(v / q) * q, c)
