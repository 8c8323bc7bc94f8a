"""EGC-FL: the TDZ layer, the feedback loop's shapes, each loss term, training, gradient flow."""

from __future__ import annotations

import pytest
import torch

from repurify.ablation import noise_energy
from repurify.defenses import DefendedModel, bpda
from repurify.defenses.egcfl import EGCFL, TDZ, EgcflLoss, EgcflSpec, train_egcfl
from repurify.defenses.perceptual import feature_network
from repurify.models import build_classifier

TRAINING = {"epochs": 2, "batch_size": 8, "lr_decay": 0.5, "plateau_patience": 1, "train_limit": 24}


def _spec(**kw) -> EgcflSpec:
    base = {"kind": "egcfl", "delta": 0.1, "widths": [4, 8], "converter_width": 4, "generations": 3,
            "perceptual": "target_features", "attack": {"eps": 0.1, "step_size": 0.05, "steps": 2},
            "training": TRAINING}
    return EgcflSpec.model_validate({**base, **kw})


def _classifier(channels: int = 1, size: int = 16):
    torch.manual_seed(0)
    return build_classifier("small_cnn", (channels, size, size), 10, (0.5,) * channels,
                            (0.25,) * channels).eval().requires_grad_(False)


def _smooth(n: int = 4, size: int = 16) -> torch.Tensor:
    """Images whose energy the DCT compacts into few coefficients."""
    ramp = torch.linspace(0.2, 0.8, size)
    return (ramp.view(1, 1, -1, 1) * ramp.view(1, 1, 1, -1)).repeat(n, 1, 1, 1)


def test_tdz_removes_most_small_noise_and_keeps_the_image() -> None:
    """Eq. 3-5: eta(T X*) ~ eta(T X) when the noise coefficients sit in the deadzone."""
    x = _smooth()
    noise = 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    tdz = TDZ(block=8, delta=0.1)
    before = noise.norm()
    after = (tdz(x + noise) - tdz(x)).norm()
    assert after < 0.5 * before
    assert (tdz(x) - x).norm() < 0.1 * x.norm()


def test_tdz_variants() -> None:
    x = torch.rand(2, 3, 20, 20)  # not a multiple of 8
    assert TDZ(8, 0.05)(x).shape == x.shape
    assert TDZ(8, 0.05, inverse=False)(x).shape == x.shape  # coefficients, cropped
    pixels = TDZ(8, 0.3, transform=False)(x)  # Table 7: deadzone on pixels
    assert torch.equal(pixels, torch.where(x.abs() <= 0.3, 0.0, x))


@pytest.mark.parametrize("channels", [1, 3])
def test_feedback_loop_shapes_and_range(channels: int) -> None:
    net = EGCFL(_spec(), channels).eval()
    x = torch.rand(2, channels, 16, 16)
    bars, hats = net.estimates(x, 4)
    assert len(bars) == len(hats) == 4
    assert all(t.shape == x.shape and t.min() >= 0 and t.max() <= 1 for t in (*bars, *hats))
    assert torch.equal(hats[0], bars[0])  # X_hat_1 = X_bar_1
    assert torch.equal(net(x), net.estimates(x, 3)[1][-1])  # K = generations at test time
    net.generations = 1
    assert torch.equal(net(x), bars[0])


def test_without_feedback_is_one_pass_of_G() -> None:
    net = EGCFL(_spec(feedback=False), 1).eval()
    assert not hasattr(net, "Gamma")
    x = torch.rand(2, 1, 16, 16)
    bars, hats = net.estimates(x, 3)
    assert len(hats) == 1 and hats[0] is bars[0]
    assert len(bars) == 1 and torch.equal(net(x), net.G(net.Phi(net.P(x))))


@pytest.mark.parametrize("channels", [1, 3])
def test_every_network_starts_as_an_identity(channels: int) -> None:
    """Untrained, every estimate is the TDZ output: training starts from it, not from noise."""
    net = EGCFL(_spec(), channels).eval()
    x = torch.rand(2, channels, 16, 16)
    assert torch.allclose(net.P(x), x, atol=1e-6)
    bars, hats = net.estimates(x, 3)
    tdz = net.Phi(x).clamp(0, 1)
    assert all(torch.allclose(t, tdz, atol=1e-5) for t in (*bars, *hats))


def test_converters_must_carry_the_image_channels() -> None:
    with pytest.raises(ValueError, match="converter_width"):
        EGCFL(_spec(converter_width=2), 3)


def test_each_loss_term() -> None:
    C = _classifier()
    net = EGCFL(_spec(), 1).eval()
    loss = EgcflLoss(net, feature_network("target_features", "relu3_4", C), C, _spec())
    x, y = torch.rand(4, 1, 16, 16), torch.randint(0, 10, (4,))
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    L_P, L_A, L_C = loss.terms(x_adv, x, y)
    bars, hats = net.estimates(x_adv, 3)
    f = feature_network("target_features", "relu3_4", C)
    assert torch.allclose(L_P, torch.stack([((f(h) - f(x)) ** 2).mean() for h in hats]).mean())  # Eq. 7
    assert torch.allclose(L_A, torch.stack([((b - x) ** 2).mean() for b in bars]).mean())  # Eq. 8
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(L_C, torch.stack([ce(C(h), y) for h in hats]).mean())  # Eq. 9
    assert torch.allclose(loss(x_adv, x, y), (L_P + L_A + L_C) / 3)  # Eq. 6, lambdas 1/3
    only_c = EgcflLoss(net, f, C, _spec(lambdas=[0.0, 0.0, 1.0]))
    assert torch.allclose(only_c(x_adv, x, y), L_C)


def test_training_gradient_reaches_every_network() -> None:
    C = _classifier()
    net = EGCFL(_spec(), 1).train()
    loss = EgcflLoss(net, feature_network("target_features", "relu3_4", C), C, _spec())
    x, y = torch.rand(4, 1, 16, 16), torch.randint(0, 10, (4,))
    loss(x, x, y).backward()
    for name in ("P", "G", "U", "V", "W", "Gamma"):
        grads = [p.grad for p in getattr(net, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is None for p in C.parameters())  # the classifier stays frozen


def test_input_gradient_through_the_unrolled_loop() -> None:
    """White-box attacks see the unrolled feedback loop; BPDA changes only the deadzone's backward."""
    defended = DefendedModel(EGCFL(_spec(), 1).eval(), _classifier())
    x = torch.rand(3, 1, 16, 16)

    def grad() -> torch.Tensor:
        xx = x.clone().requires_grad_(True)
        defended(xx).logsumexp(1).sum().backward()
        return xx.grad

    autograd, straight = grad(), None
    with bpda():
        straight = grad()
    assert autograd.abs().sum() > 0 and straight.abs().sum() > 0
    assert not torch.allclose(autograd, straight)


def test_train_egcfl_restores_the_best_epoch_and_reports_terms() -> None:
    C = _classifier()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(30, 1, 16, 16), torch.randint(0, 10, (30,))
    net, hist, info = train_egcfl(_spec(), x, y, {"target": C, "substitute": C},
                                  device=torch.device("cpu"), gen=gen)
    assert len(hist.val_loss) == 2 and hist.best_val_loss == min(hist.val_loss)
    assert info["train_examples"] + info["val_examples"] == 24  # train_limit
    assert set(info["val_terms"]) == {"L_P", "L_A", "L_C"}
    assert not net.training


def test_noise_energy_of_figure_4() -> None:
    x = _smooth(3)
    x_adv = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    energy = noise_energy(TDZ(8, 0.1), x, x_adv)
    assert torch.allclose(torch.tensor(energy["before"]), (x - x_adv).flatten(1).norm(dim=1))
    assert len(energy["after"]) == 3 and energy["ratio"] < 0.5


def test_effective_threshold_is_delta_over_the_gain_of_p() -> None:
    """A known answer: P = 4.5 identity - 4-neighbour sum has gain 0.5 at DC and 8.5 at Nyquist."""
    from repurify.defenses.egcfl import effective_threshold

    P = torch.nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        P.weight[0, 0] = torch.tensor([[0.0, -1, 0], [-1, 4.5, -1], [0, -1, 0]])
    t = effective_threshold(P, 0.1, (16, 16))
    assert t["P_gain_dc"] == pytest.approx(0.5) and t["P_gain_max"] == pytest.approx(8.5)
    assert t["delta_over_dc_gain"] == pytest.approx(0.2)
    assert t["delta_over_max_gain"] == pytest.approx(0.1 / 8.5)
