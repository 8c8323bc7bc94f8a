"""GCLN: the quantized transform, detector, Eq. 3-6 training step, on-the-fly clean set,
and the gradient masking its rounding causes (autograd vs BPDA white-box rows)."""

from __future__ import annotations

import math

import torch

from repurify.attacks import run_attack
from repurify.defenses import DefendedModel, bpda
from repurify.defenses.dct import BlockDCT
from repurify.defenses.gcln import (
    CleanSet,
    Detector,
    GclnSpec,
    GclnTraining,
    Generator,
    QuantizedTransform,
    detector_loss,
    perceptual_distance,
    pretrain_detector,
    train_gcln,
)
from repurify.defenses.perceptual import feature_network
from repurify.evaluation import Scoring, whitebox_rows
from repurify.models import build_classifier
from repurify.params import PgdSpec

TRAINING = {"epochs": 2, "batch_size": 8, "lr_decay": 0.5, "plateau_patience": 1, "train_limit": 24}


def _spec(**kw) -> GclnSpec:
    base = {"kind": "gcln", "q": "10/255", "widths": [4, 8], "detector_widths": [8, 8],
            "detector_epochs": 2, "perceptual": "target_features",
            "attack": {"eps": 0.1, "step_size": 0.05, "steps": 2}, "training": TRAINING}
    return GclnSpec.model_validate({**base, **kw})


def _classifier():
    torch.manual_seed(0)
    return build_classifier("small_cnn", (1, 16, 16), 10, (0.5,), (0.25,)).eval().requires_grad_(False)


def test_quantized_transform_output_has_quantized_coefficients() -> None:
    """Eq. 2: T of the layer's output lies on the grid q * Z."""
    q = 0.2
    x = torch.rand(2, 3, 16, 16)
    out = QuantizedTransform(8, q)(x)
    coeffs = BlockDCT(8)(out) / q
    assert out.shape == x.shape
    assert torch.allclose(coeffs, coeffs.round(), atol=1e-4)
    assert (out - x).abs().max() > 0


def test_generator_starts_as_the_quantized_transform() -> None:
    G = Generator(_spec(), 3).eval()
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(G(x), G.quantized_transform(x).clamp(0, 1), atol=1e-6)


def test_q_is_read_in_the_papers_notation() -> None:
    assert abs(_spec().q - 10 / 255) < 1e-12


def test_generator_masks_gradients_unless_bpda() -> None:
    G = Generator(_spec(), 1).eval()
    defended = DefendedModel(G, _classifier())
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    defended(x).logsumexp(1).sum().backward()
    assert torch.count_nonzero(x.grad) == 0  # rounding's true gradient
    x.grad = None
    with bpda():
        defended(x).logsumexp(1).sum().backward()
    assert x.grad.abs().sum() > 0


def test_whitebox_rows_report_both_protocols() -> None:
    """The paper's autograd protocol cannot move the input; BPDA can, so it is never weaker."""
    defended = DefendedModel(Generator(_spec(), 1).eval(), _classifier()).eval()
    x, y = torch.rand(16, 1, 16, 16), torch.randint(0, 10, (16,))
    spec = PgdSpec.model_validate({"kind": "pgd", "eps": 0.3, "step_size": 0.1, "steps": 5})
    rows = whitebox_rows(defended, [("pgd", spec)], x, y, num_classes=10, scoring=Scoring(16), seed=0)
    by = {r.get("source", "bpda"): r for r in rows}
    assert set(by) == {"bpda", "autograd"} and by["bpda"]["bpda"] and not by["autograd"]["bpda"]
    assert by["bpda"]["accuracy"] <= by["autograd"]["accuracy"]
    with bpda(False):  # without BPDA, PGD's gradient steps are all zero: only the random start
        adv, _ = run_attack(spec, defended, x, y, num_classes=10, batch_size=16, seed=0,
                            early_stop=False)
    assert (adv - x).abs().max() <= 0.3 + 1e-6


def test_detector_shape_and_pretraining_separates_clean_from_attacked() -> None:
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(32, 1, 16, 16, generator=gen) * 0.5
    attacked = (clean + 0.4 * torch.sign(torch.randn(clean.shape, generator=gen))).clamp(0, 1)
    torch.manual_seed(0)
    D = Detector(1, [8, 8], 16)
    assert D(clean).shape == (32,)
    losses = pretrain_detector(D, clean, attacked, _spec(detector_epochs=30), device=torch.device("cpu"),
                               gen=gen)
    assert len(losses) == 30 and losses[-1] < losses[0]
    assert detector_loss(D, clean, attacked) < 0.5 * 2 * math.log(2)  # half of chance level


def test_clean_set_keeps_the_newest_and_samples_from_them() -> None:
    pool = CleanSet(capacity=5)
    assert len(pool) == 0
    pool.add(torch.zeros(3, 1, 2, 2))
    pool.add(torch.ones(4, 1, 2, 2))
    assert pool.added == 7 and len(pool) == 5 and pool.images.sum() == 16
    assert pool.sample(10, torch.Generator().manual_seed(0)).shape == (5, 1, 2, 2)


def test_training_step_updates_D_and_grows_the_clean_set() -> None:
    C = _classifier()
    spec = _spec()
    G, D = Generator(spec, 1).train(), Detector(1, [8], 16)
    step = GclnTraining(G, D, feature_network("target_features", "relu3_4", C), C, spec, capacity=64,
                        gen=torch.Generator().manual_seed(0))
    x = torch.rand(8, 1, 16, 16)
    with torch.no_grad():
        y = C(G(x)).argmax(1)  # every recovered image is classified correctly
    before = [p.clone() for p in D.parameters()]
    loss = step((x, x, y))
    assert any(not torch.equal(a, b) for a, b in zip(before, D.parameters(), strict=True))
    assert step.clean_set.added == 8 and len(step.d_losses) == 1
    loss.backward()
    assert all(p.grad is not None for p in G.cleaner.parameters())
    no_grow = GclnTraining(G, D, feature_network("target_features", "relu3_4", C), C,
                           _spec(grow_clean_set=False), capacity=64, gen=torch.Generator())
    no_grow((x, x, y))
    assert no_grow.clean_set.added == 0


def test_perceptual_distance_is_zero_for_identical_images() -> None:
    f = feature_network("target_features", "relu3_4", _classifier())
    x = torch.rand(4, 1, 16, 16)
    assert perceptual_distance(f, x, x) == 0
    assert perceptual_distance(f, x, 1 - x) > 0


def test_train_gcln_records_both_players() -> None:
    C = _classifier()
    x, y = torch.rand(30, 1, 16, 16), torch.randint(0, 10, (30,))
    G, hist, info = train_gcln(_spec(), x, y, {"target": C, "substitute": C},
                               device=torch.device("cpu"), gen=torch.Generator().manual_seed(0))
    assert len(hist.val_loss) == 2 and hist.best_val_loss == min(hist.val_loss)
    assert len(info["detector_pretrain_loss"]) == 2 and len(info["detector_loss"]) == 2
    assert isinstance(G, Generator)


def test_losses_are_equations_3_to_6() -> None:
    C = _classifier()
    spec = _spec(lam=0.3)
    G, D = Generator(spec, 1).train(), Detector(1, [8], 16)
    f = feature_network("target_features", "relu3_4", C)
    step = GclnTraining(G, D, f, C, spec, capacity=64, gen=torch.Generator().manual_seed(0))
    x_o, x_adv = torch.rand(6, 1, 16, 16), torch.rand(6, 1, 16, 16)
    loss = step((x_adv, x_o, torch.zeros(6, dtype=torch.long)))
    with torch.no_grad():
        x_bar = G(x_adv)
        p_clean = torch.sigmoid(D(x_bar))  # D after its own update in this step
        L_A = -torch.log(p_clean).mean()  # Eq. 5: cross-entropy against "clean"
        L_P = ((f(x_o) - f(x_bar)).flatten(1).norm(dim=1) / f(x_o)[0].numel() ** 0.5).mean()  # Eq. 4
        assert torch.allclose(loss, 0.3 * L_P + 0.7 * L_A, atol=1e-5)  # Eq. 3
        eq6 = torch.log(torch.sigmoid(D(x_o))).mean() + torch.log(1 - torch.sigmoid(D(x_bar))).mean()
        assert torch.allclose(detector_loss(D, x_o, x_bar), -eq6, atol=1e-5)  # D maximises Eq. 6
