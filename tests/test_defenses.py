"""Defense interface: BPDA at the layer, the EOT gradient, and the baseline purifiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import median_filter
from torch import nn

from repurify.attacks.base import Goal, input_gradient
from repurify.defenses import DefendedModel, Identity, Purifier, bpda, build_purifier
from repurify.defenses.bit_depth import BitDepth, BitDepthSpec
from repurify.defenses.jpeg import Jpeg, JpegSpec
from repurify.defenses.median_filter import MedianFilter, MedianSpec
from repurify.defenses.none import NoneSpec


class _Linear(nn.Module):
    """A fixed linear classifier: its input gradient is known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)
        torch.nn.init.normal_(self.fc.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class _NoisyQuantizer(Purifier):
    """Randomized and non-differentiable: Gaussian noise, then 2-bit rounding."""

    differentiable, randomized = False, True

    def __init__(self) -> None:
        super().__init__()
        self.inner = BitDepth(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x + 0.05 * torch.randn_like(x)).clamp(0, 1))


def _grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model(x)[:, 0].sum().backward()
    return x.grad


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))


def test_bpda_turns_zero_gradient_into_identity(x: torch.Tensor) -> None:
    clf = _Linear()
    defended = DefendedModel(BitDepth(3), clf)
    assert torch.count_nonzero(_grad(defended, x)) == 0  # rounding: true gradient is 0
    with bpda():
        g = _grad(defended, x)
    # straight-through: the gradient of the classifier, taken at the purified image
    expected = clf.fc.weight[0].view(1, 1, 4, 4).expand_as(x)
    assert torch.allclose(g, expected)
    assert torch.count_nonzero(_grad(defended, x)) == 0  # the mode does not leak out


def test_bpda_leaves_forward_unchanged(x: torch.Tensor) -> None:
    p = BitDepth(3)
    with bpda():
        on = p(x)
    assert torch.equal(on, p(x))
    assert torch.equal(on, (x * 7).round() / 7)


def test_eot_is_the_mean_of_per_draw_loss_gradients(x: torch.Tensor) -> None:
    """Athalye et al.: E_t[grad L(f(t(x)))], each draw's loss differentiated on its own (not the
    gradient of the loss of the mean logits, which weights draws by their confidence)."""
    defended = DefendedModel(_NoisyQuantizer(), _Linear())
    assert defended.randomized
    goal = Goal(torch.tensor([0, 1, 2, 0]))
    torch.manual_seed(0)
    with bpda():
        single = []
        for _ in range(8):
            xr = x.clone().requires_grad_(True)
            single.append(torch.autograd.grad(goal.loss(defended(xr)).sum(), xr)[0])
        torch.manual_seed(0)
        averaged, draws = input_gradient(defended, x, goal, samples=8)
        torch.manual_seed(0)
        xm = x.clone().requires_grad_(True)
        of_mean = torch.autograd.grad(goal.loss(torch.stack([defended(xm) for _ in range(8)]).mean(0))
                                      .sum(), xm)[0]
    assert draws.shape == (8, 4, 3) and torch.count_nonzero(averaged) > 0
    assert torch.allclose(averaged, torch.stack(single).mean(0), atol=1e-6)
    assert not torch.allclose(averaged, of_mean, atol=1e-4)
    assert torch.equal(goal.missed(draws), (draws.argmax(-1) == goal.y).double().mean(0))


def test_classifier_is_frozen(x: torch.Tensor) -> None:
    clf = _Linear().train()
    defended = DefendedModel(Identity(), clf)
    assert not clf.training
    assert not any(p.requires_grad for p in clf.parameters())
    assert torch.allclose(defended(x), clf(x))


def test_median_filter_matches_scipy() -> None:
    x = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    ours = MedianFilter(3)(x).numpy()
    ref = median_filter(x.numpy(), size=(1, 1, 3, 3), mode="mirror")
    assert np.allclose(ours, ref)
    g = _grad(DefendedModel(MedianFilter(3), nn.Flatten()), x)
    assert torch.count_nonzero(g) > 0  # differentiable a.e.: no BPDA needed


def test_jpeg_compresses_and_needs_bpda() -> None:
    gen = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 4, generator=gen), size=16,
                                             mode="bilinear", align_corners=False)
    noisy = (smooth + 0.1 * torch.randn(smooth.shape, generator=gen)).clamp(0, 1)
    out = Jpeg(50)(noisy)
    assert out.shape == noisy.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert (out - smooth).abs().mean() < (noisy - smooth).abs().mean()  # removes some noise
    assert (Jpeg(100)(smooth) - smooth).abs().mean() < 0.02
    clf = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    assert torch.count_nonzero(_grad(DefendedModel(Jpeg(75), clf), noisy)) == 0
    with bpda():
        assert torch.count_nonzero(_grad(DefendedModel(Jpeg(75), clf), noisy)) > 0
    gray = Jpeg(75)(smooth[:, :1])
    assert gray.shape == (2, 1, 16, 16)


def test_build_purifier_from_params() -> None:
    assert isinstance(build_purifier(NoneSpec(kind="none")), Identity)
    assert build_purifier(JpegSpec(kind="jpeg", quality=60)).quality == 60
    assert build_purifier(BitDepthSpec(kind="bit_depth", bits=4)).levels == 15
    m = build_purifier(MedianSpec(kind="median_filter", kernel=5))
    assert m.kernel == 5 and m.differentiable and not m.randomized
    assert not build_purifier(BitDepthSpec(kind="bit_depth", bits=4)).differentiable
