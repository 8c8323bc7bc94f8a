"""HGD: DUNET/DAE shapes, the four guided losses, the Table 1 training set, gradient flow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from repurify.defenses.hgd import DUNET, Ensemble, GuidedLoss, HgdSpec, training_set
from repurify.models import build_classifier
from repurify.models.features import ConvFeatures

TRAINING = {"epochs": 1, "batch_size": 8, "lr_decay": 0.1, "plateau_patience": 1}


def _spec(**kw) -> HgdSpec:
    base = {"kind": "hgd", "widths": [8, 16, 16], "sources": ["target"], "eps_max": 0.1,
            "training": TRAINING}
    return HgdSpec.model_validate({**base, **kw})


def _classifier(arch: str = "small_cnn", size: int = 16, channels: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier(arch, (channels, size, size), 10, (0.5,) * channels,
                            (0.25,) * channels).eval().requires_grad_(False)


@pytest.mark.parametrize(("size", "channels"), [(16, 1), (28, 1), (32, 3), (15, 3)])
@pytest.mark.parametrize("lateral", [True, False])
def test_dunet_keeps_shape_and_range(size: int, channels: int, lateral: bool) -> None:
    net = DUNET(channels, [8, 16, 16, 16], lateral=lateral).eval()
    x = torch.rand(2, channels, size, size)
    out = net(x)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1


def test_dunet_follows_figure_3_at_imagenet_widths() -> None:
    """C2 then four stride-2 C3 (224 -> 14); feedback: three C3 and one C2; 1x1 head."""
    net = DUNET(3, [64, 128, 256, 256, 256])
    convs = [[m for m in block if isinstance(m, torch.nn.Conv2d)] for block in net.forward_path]
    assert [len(c) for c in convs] == [2, 3, 3, 3, 3]
    assert [c[0].stride for c in convs] == [(1, 1)] + [(2, 2)] * 4
    sizes, h = [], torch.zeros(1, 3, 224, 224)
    for block in net.forward_path:
        h = block(h)
        sizes.append((h.shape[1], h.shape[-1]))
    assert sizes == [(64, 224), (128, 112), (256, 56), (256, 28), (256, 14)]
    back = [[m for m in block if isinstance(m, torch.nn.Conv2d)] for block in net.feedback_path]
    assert [len(c) for c in back] == [3, 3, 3, 2]
    assert [c[0].in_channels for c in back] == [512, 512, 384, 192]  # upsampled + lateral
    assert [c[-1].out_channels for c in back] == [256, 256, 128, 64]
    assert net.head.kernel_size == (1, 1) and net.head.out_channels == 3


def test_dae_has_no_lateral_inputs() -> None:
    net = DUNET(3, [64, 128, 256, 256, 256], lateral=False)
    firsts = [next(m for m in b if isinstance(m, torch.nn.Conv2d)) for b in net.feedback_path]
    assert [c.in_channels for c in firsts] == [256, 256, 256, 128]


def test_dunet_predicts_the_negative_noise() -> None:
    """Eq. 4: with a zero 1x1 head, x_hat = x* exactly."""
    net = DUNET(1, [8, 16]).eval()
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    x = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(net(x), x)


def test_conv_features_are_the_topmost_feature_map() -> None:
    f = _classifier()
    x = torch.rand(2, 1, 16, 16)
    feats = ConvFeatures(f)(x)
    flatten = next(i for i, m in enumerate(f.net) if isinstance(m, torch.nn.Flatten))
    expected = f.net[:flatten]((x - f.mean) / f.std)
    assert feats.ndim == 4
    torch.testing.assert_close(feats, expected)
    resnet = _classifier("resnet18_cifar", 32, 3)
    assert ConvFeatures(resnet)(torch.rand(1, 3, 32, 32)).shape == (1, 512, 4, 4)
    with pytest.raises(ValueError, match="no convolutional feature map"):
        ConvFeatures(_classifier("mnist_d"))


def test_guided_losses_match_eq_3_and_eq_5() -> None:
    f = _classifier()
    x, x_hat = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(GuidedLoss("pixel", f)(x_hat, x, y), (x_hat - x).abs().mean())
    torch.testing.assert_close(GuidedLoss("lgd", f)(x_hat, x, y), (f(x_hat) - f(x)).abs().mean())
    feats = ConvFeatures(f)
    torch.testing.assert_close(GuidedLoss("fgd", f)(x_hat, x, y),
                               (feats(x_hat) - feats(x)).abs().mean())
    torch.testing.assert_close(GuidedLoss("cgd", f)(x_hat, x, y), F.cross_entropy(f(x_hat), y))
    for kind in ("pixel", "fgd", "lgd"):
        assert GuidedLoss(kind, f)(x, x, y) == 0


@pytest.mark.parametrize("kind", ["pixel", "fgd", "lgd", "cgd"])
def test_gradient_reaches_every_denoiser_weight_and_no_classifier_weight(kind: str) -> None:
    f = _classifier()
    net = DUNET(1, [8, 16]).train()
    x = torch.rand(4, 1, 16, 16)
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    GuidedLoss(kind, f)(net(x_adv), x, torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(p.grad is None for p in f.parameters())


def test_training_set_follows_table_1() -> None:
    """FGSM per source, FGSM + IFGSM_k on the ensemble; eps on the grid {1..L} * eps_max / L."""
    sources = [_classifier(seed=0), _classifier("mnist_a", seed=1)]
    spec = _spec(sources=["target", "substitute"], ifgsm_steps=[2, 4, 8], eps_max=0.1, eps_levels=4)
    x, y = torch.rand(10, 1, 16, 16) * 0.6 + 0.2, torch.arange(10)
    x_adv, x_clean, labels = training_set(x, y, sources, spec, torch.Generator().manual_seed(0),
                                          batch_size=4, device=torch.device("cpu"))
    copies = 2 + 1 + 3
    assert x_adv.shape == (copies * 10, 1, 16, 16)
    assert len(x_clean) == copies * 10
    x_clean = x_clean[torch.arange(copies * 10)]
    torch.testing.assert_close(x_clean, x.repeat(copies, 1, 1, 1))
    assert torch.equal(labels, y.repeat(copies))
    linf = (x_adv - x_clean).flatten(1).abs().amax(1)
    grid = torch.tensor([0.025, 0.05, 0.075, 0.1])
    assert linf.max() <= 0.1 + 1e-6
    # FGSM copies (the first three) move every pixel by exactly their eps: a grid point
    fgsm = linf[:30]
    assert ((fgsm.view(-1, 1) - grid.view(1, -1)).abs().min(1).values < 1e-6).all()
    assert len(torch.unique(fgsm.round(decimals=4))) > 1  # eps is drawn per example


def test_training_set_attacks_hurt_the_ensemble() -> None:
    sources = [_classifier(seed=0)]
    spec = _spec(eps_max=0.3, eps_levels=1, ifgsm_steps=[4])
    x, y = torch.rand(16, 1, 16, 16), torch.randint(0, 10, (16,))
    x_adv, _, labels = training_set(x, y, sources, spec, torch.Generator().manual_seed(0), 16,
                                    torch.device("cpu"))
    assert len(x_adv) == 2 * 16  # a lone source: its FGSM is the ensemble's FGSM
    assert torch.equal(labels, y.repeat(2))  # the true labels stay with the copies (CGD's loss)
    ens = Ensemble(sources)
    y_x = ens(x).argmax(1)  # the attacks ascend the loss of the predicted class
    clean_loss = F.cross_entropy(ens(x), y_x)
    assert F.cross_entropy(ens(x_adv[16:]), y_x) > clean_loss


def test_training_set_never_sees_the_true_label() -> None:
    """Sec. 2.1: the attacks use the model's predicted class y_x; y_true would leak the label."""
    sources = [_classifier(seed=0), _classifier("mnist_a", seed=1)]
    spec = _spec(sources=["target", "substitute"], eps_max=0.1, eps_levels=4, ifgsm_steps=[2])
    x = torch.rand(12, 1, 16, 16)
    runs = [training_set(x, y, sources, spec, torch.Generator().manual_seed(0), 8, torch.device("cpu"))[0]
            for y in (torch.zeros(12, dtype=torch.long), torch.arange(12) % 10)]
    assert torch.equal(*runs)
