"""The shared blockwise DCT, EGC-FL's deadzone and GCLN's quantizer, with their gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.fft import dctn

from repurify.defenses import bpda
from repurify.defenses.dct import BlockDCT, dct_matrix, deadzone, quantize


@pytest.mark.parametrize("m", [1, 2, 4, 5, 8])
def test_dct_matrix_is_orthonormal(m: int) -> None:
    d = dct_matrix(m).double()
    assert torch.allclose(d @ d.T, torch.eye(m, dtype=torch.float64), atol=1e-6)


def test_blocks_match_scipy_orthonormal_dct2() -> None:
    x = torch.rand(2, 3, 16, 24)
    blocks = x.view(2, 3, 2, 8, 3, 8).permute(0, 1, 2, 4, 3, 5).numpy()
    ref = dctn(blocks, axes=(-2, -1), norm="ortho")
    got = BlockDCT(8)(x).view(2, 3, 2, 8, 3, 8).permute(0, 1, 2, 4, 3, 5).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_gcln_equation_1_is_the_orthonormal_dct_at_m_8() -> None:
    """GCLN Eq. 1: 1/4 C_i C_j sum x_nk cos(i pi (2n+1)/16) cos(j pi (2k+1)/16)."""
    x = torch.rand(8, 8, dtype=torch.float64)
    n = torch.arange(8, dtype=torch.float64)
    c = torch.where(n == 0, 1 / np.sqrt(2), 1.0)
    cos = torch.cos(n.view(-1, 1) * np.pi * (2 * n.view(1, -1) + 1) / 16)  # [i, n]
    eq1 = 0.25 * c.view(-1, 1) * c.view(1, -1) * (cos @ x @ cos.T)
    got = BlockDCT(8)(x.float().view(1, 1, 8, 8))[0, 0].double()
    assert torch.allclose(got, eq1, atol=1e-5)


@pytest.mark.parametrize(("size", "m"), [((16, 16), 8), ((32, 32), 8), ((13, 10), 4), ((28, 28), 8),
                                         ((7, 9), 8)])
def test_inverse_is_perfect_for_any_size(size: tuple[int, int], m: int) -> None:
    t = BlockDCT(m)
    x = torch.rand(3, 2, *size)
    coeffs = t(x)
    assert coeffs.shape[-2] % m == 0 and coeffs.shape[-1] % m == 0
    assert torch.allclose(t.inverse(coeffs, size), x, atol=1e-5)


def test_transform_preserves_energy_on_whole_blocks() -> None:
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(BlockDCT(8)(x).norm(), x.norm(), rtol=1e-5)


def test_block_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="block size"):
        BlockDCT(0)


def _grad(fn, c: torch.Tensor) -> torch.Tensor:
    c = c.clone().requires_grad_(True)
    fn(c).sum().backward()
    return c.grad


def test_deadzone_values_and_gradients() -> None:
    c = torch.tensor([-0.5, -0.1, -0.05, 0.0, 0.05, 0.1, 0.3])
    assert torch.equal(deadzone(c, 0.1), torch.tensor([-0.5, 0, 0, 0, 0, 0, 0.3]))
    assert torch.equal(_grad(lambda v: deadzone(v, 0.1), c), torch.tensor([1.0, 0, 0, 0, 0, 0, 1]))
    with bpda():
        assert torch.equal(deadzone(c, 0.1), torch.tensor([-0.5, 0, 0, 0, 0, 0, 0.3]))
        assert torch.equal(_grad(lambda v: deadzone(v, 0.1), c), torch.ones(7))


def test_quantizer_values_and_gradients() -> None:
    c = torch.tensor([-0.26, -0.1, 0.04, 0.06, 0.49])
    q = 0.1
    assert torch.allclose(quantize(c, q), torch.tensor([-0.3, -0.1, 0.0, 0.1, 0.5]))
    assert torch.equal(_grad(lambda v: quantize(v, q), c), torch.zeros(5))  # rounding: 0 a.e.
    with bpda():
        assert torch.equal(_grad(lambda v: quantize(v, q), c), torch.ones(5))
