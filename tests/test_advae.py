"""AdvAE: architectures, the PGD inner maximisation, the Eq. 7/8 objective and gradient flow."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from repurify.defenses import DefendedModel
from repurify.defenses.advae import AdvaeObjective, AdvaeSpec, ConvAE, UNetAE, build_autoencoder, pgd_inner
from repurify.models import build_classifier
from repurify.schema import PgdBudget

TRAINING = {"epochs": 1, "batch_size": 8, "lr_decay": 0.5, "plateau_patience": 4}


def _spec(**kw) -> AdvaeSpec:
    base = {"kind": "advae", "architecture": "conv_ae", "widths": [8, 8], "lam": 0.0,
            "pgd": {"eps": 0.1, "step_size": 0.02, "steps": 5}, "training": TRAINING}
    return AdvaeSpec.model_validate({**base, **kw})


def _classifier(arch: str = "small_cnn", seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier(arch, (1, 16, 16), 10, (0.5,), (0.25,)).eval().requires_grad_(False)


@pytest.mark.parametrize(("size", "channels"), [(16, 1), (28, 1), (32, 3)])
def test_conv_ae_matches_section_4_1(size: int, channels: int) -> None:
    ae = ConvAE(channels, [32, 32]).eval()
    x = torch.rand(2, channels, size, size)
    out = ae(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    convs = [m for m in ae.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 32, 32, channels]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in ae.encoder) == 2
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in ae.decoder) == 0  # decoder: conv+ReLU


@pytest.mark.parametrize("size", [32, 28, 16])
def test_unet_matches_section_4_1(size: int) -> None:
    ae = UNetAE(3, [32, 64, 128, 256, 512]).eval()
    x = torch.rand(2, 3, size, size)
    out = ae(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert [b[0].out_channels for b in ae.encoder] == [32, 64, 128, 256, 512]
    assert [b[0].out_channels for b in ae.decoder] + [ae.out.out_channels] == [256, 128, 64, 32, 3]
    assert [b[0].in_channels for b in ae.decoder] == [768, 384, 192, 96]  # skip concatenation


def test_pgd_inner_stays_in_budget_and_raises_the_loss() -> None:
    model = DefendedModel(ConvAE(1, [8, 8]).eval(), _classifier())
    x, y = torch.rand(16, 1, 16, 16), torch.randint(0, 10, (16,))
    budget = PgdBudget(eps=0.1, step_size=0.02, steps=10)
    x_adv = pgd_inner(model, x, y, budget, torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    assert all(p.grad is None for p in model.parameters())  # crafting leaves no weight gradients


def _objective(spec: AdvaeSpec, classifiers, seed: int = 0) -> tuple[torch.Tensor, ConvAE]:
    torch.manual_seed(1)
    ae = build_autoencoder(spec, 1).train()
    batch = (torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(2)),
             torch.arange(8))
    return AdvaeObjective(ae, classifiers, spec, torch.Generator().manual_seed(seed))(batch), ae


def test_objective_is_eq_7_and_eq_8() -> None:
    f1, f2 = _classifier(seed=0), _classifier("mnist_a", seed=1)
    adv_only, _ = _objective(_spec(lam=0.0), [f1])
    with_rec, ae = _objective(_spec(lam=0.5), [f1])
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(with_rec - adv_only, 0.5 * F.binary_cross_entropy(ae(x), x))
    # Eq. 8: one PGD term per classifier; lambda * D counted once per classifier
    ens0, _ = _objective(_spec(lam=0.0), [f1, f2])
    ens1, ae = _objective(_spec(lam=0.5), [f1, f2])
    torch.testing.assert_close(ens1 - ens0, 2 * 0.5 * F.binary_cross_entropy(ae(x), x))
    assert ens0 > adv_only


@pytest.mark.parametrize("ensemble", [1, 2])
def test_objective_trains_the_auto_encoder_only(ensemble: int) -> None:
    """Eq. 8's later terms craft after the earlier ones built their graphs: backward still runs."""
    fs = [_classifier(seed=0), _classifier("mnist_a", seed=1)][:ensemble]
    loss, ae = _objective(_spec(lam=1.0), fs)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.parameters())
    assert all(p.grad is None for f in fs for p in f.parameters())
    assert ae.training


def test_training_crafts_against_the_function_it_trains() -> None:
    """Eq. 7's inner max is over the AE being minimised: in training, with batch statistics
    (crafted on the inference-mode AE, model X's AE collapsed to a constant image). Only the
    loss's own pass moves the running statistics; the attack's five move none."""
    spec, f = _spec(lam=0.0), _classifier()
    torch.manual_seed(1)
    ae = build_autoencoder(spec, 1).train()
    reference = copy.deepcopy(ae)
    initial = copy.deepcopy(reference.state_dict())
    x, y = torch.rand(8, 1, 16, 16), torch.arange(8)
    AdvaeObjective(ae, [f], spec, torch.Generator().manual_seed(0))((x, y))
    # batch statistics: the training-mode outputs do not depend on the running ones
    x_adv = pgd_inner(DefendedModel(reference, f), x, y, spec.pgd, torch.Generator().manual_seed(0))
    reference.load_state_dict(initial)
    reference(x_adv)  # the loss's pass
    for (name, a), b in zip(ae.named_buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_adversarial_examples_are_crafted_against_the_current_weights() -> None:
    """The inner max must see AE + classifier: a different AE gives different examples."""
    f = _classifier()
    x, y = torch.rand(4, 1, 16, 16), torch.arange(4)
    budget = PgdBudget(eps=0.1, step_size=0.02, steps=5)
    advs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = DefendedModel(ConvAE(1, [8, 8]).eval(), f)
        advs.append(pgd_inner(model, x, y, budget, torch.Generator().manual_seed(0)))
    assert not torch.equal(advs[0], advs[1])
