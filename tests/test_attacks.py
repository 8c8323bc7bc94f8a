"""Attacks: budgets, validity checks, and cross-checks against an independent implementation
(IBM's Adversarial Robustness Toolbox) on the same model and settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from repurify.attacks import AttackValidityError, Goal, check_adversarial, run_attack
from repurify.attacks.base import (
    STACKED_VALUES,
    choose_targets,
    draw_logits,
    draws_per_call,
    input_gradient,
    perturbation_norm,
    project,
    random_start,
)
from repurify.attacks.cw import cw_l2
from repurify.attacks.gradient import bim, fgsm, mifgsm, pgd
from repurify.data import load_split
from repurify.models import build_classifier
from repurify.params import ClassifierParams, CwL2Spec, DataParams, FgsmSpec, PgdSpec
from repurify.runtime import seed_everything
from repurify.training import train_classifier

EPS, STEP, STEPS = 0.08, 0.01, 20
PGD_DRAWS = 8  # random starts averaged when comparing PGD with ART


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A digits classifier (small_cnn, 4 epochs on 600 images) and 300 test images."""
    torch.set_num_threads(2)
    split = load_split(DataParams(name="digits", image_size=16, channels=1, train_limit=600,
                                  test_limit=300))
    gen = seed_everything(0)
    model = build_classifier("small_cnn", (1, 16, 16), 10, (0.3,), (0.3,))
    cfg = ClassifierParams(arch="small_cnn", epochs=4, batch_size=32, optimizer="adam", lr=0.003)
    train_classifier(model, split.x_train, split.y_train, cfg, torch.device("cpu"), gen)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), split.x_test.float() / 255, split.y_test


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _art(model: nn.Module):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 16, 16),
                             nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_clean_model_is_accurate(setup) -> None:
    model, x, y = setup
    assert _acc(model, x, y) > 0.85


def test_fgsm_matches_art_exactly(setup) -> None:
    from art.attacks.evasion import FastGradientMethod

    model, x, y = setup
    ours = fgsm(model, x, Goal(y), norm="linf", eps=EPS, gen=_gen())
    art = FastGradientMethod(_art(model), norm=np.inf, eps=EPS, batch_size=512)
    theirs = torch.from_numpy(art.generate(x.numpy(), y=y.numpy()))
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert _acc(model, ours, y) < _acc(model, x, y) - 0.1


@pytest.mark.parametrize("kind", ["bim", "pgd", "mifgsm"])
def test_iterative_attacks_match_art_within_one_point(setup, kind: str) -> None:
    from art.attacks.evasion import (
        BasicIterativeMethod,
        MomentumIterativeMethod,
        ProjectedGradientDescent,
    )

    model, x, y = setup
    clf = _art(model)
    # one PGD random start moves robust accuracy by ~0.5 pt (std) in either implementation, so
    # single draws differ by > 1 pt about a quarter of the time: compare means over PGD_DRAWS
    # starts (std of the difference ~0.3 pt). BIM and MI-FGSM are deterministic.
    accs = []
    for seed in range(PGD_DRAWS if kind == "pgd" else 1):
        gen = torch.Generator().manual_seed(seed)
        np.random.seed(seed)  # ART draws its random start from NumPy's global generator
        if kind == "bim":
            ours = bim(model, x, Goal(y), norm="linf", eps=EPS, step_size=STEP, steps=STEPS,
                       early_stop=False, gen=gen)
            art = BasicIterativeMethod(clf, eps=EPS, eps_step=STEP, max_iter=STEPS, batch_size=512,
                                       verbose=False)
        elif kind == "pgd":
            ours = pgd(model, x, Goal(y), norm="linf", eps=EPS, step_size=STEP, steps=STEPS,
                       restarts=1, early_stop=False, gen=gen)
            art = ProjectedGradientDescent(clf, norm=np.inf, eps=EPS, eps_step=STEP, max_iter=STEPS,
                                           num_random_init=1, batch_size=512, verbose=False)
        else:
            ours = mifgsm(model, x, Goal(y), norm="linf", eps=EPS, step_size=STEP, steps=STEPS,
                          decay=1.0, early_stop=False, gen=gen)
            art = MomentumIterativeMethod(clf, norm=np.inf, eps=EPS, eps_step=STEP, max_iter=STEPS,
                                          decay=1.0, batch_size=512, verbose=False)
        theirs = torch.from_numpy(art.generate(x.numpy(), y=y.numpy()))
        accs.append((_acc(model, ours, y), _acc(model, theirs, y)))
        check_adversarial(x, ours, y, y, "linf", EPS, kind)
    acc_ours, acc_theirs = np.mean(accs, axis=0)
    assert abs(acc_ours - acc_theirs) <= 0.01 + 1e-9, accs
    assert acc_ours < _acc(model, x, y) - 0.15  # the attack does something


def test_targeted_pgd_matches_art(setup) -> None:
    from art.attacks.evasion import ProjectedGradientDescent

    model, x, y = setup
    targets = choose_targets(model, x, y, "random", 10, _gen())
    assert not (targets == y).any()
    ours = pgd(model, x, Goal(y, targets), norm="linf", eps=0.1, step_size=STEP, steps=20,
               restarts=1, early_stop=False, gen=_gen())
    art = ProjectedGradientDescent(_art(model), norm=np.inf, eps=0.1, eps_step=STEP, max_iter=20,
                                   targeted=True, num_random_init=1, batch_size=512, verbose=False)
    theirs = torch.from_numpy(art.generate(x.numpy(), y=targets.numpy()))
    with torch.no_grad():
        hit_ours = float((model(ours).argmax(1) == targets).float().mean())
        hit_theirs = float((model(theirs).argmax(1) == targets).float().mean())
    assert abs(hit_ours - hit_theirs) <= 0.01 + 1e-9, (hit_ours, hit_theirs)
    assert hit_ours > 0.1  # clean images hit a random wrong class ~never


def test_cw_l2_matches_art_within_one_point(setup) -> None:
    from art.attacks.evasion import CarliniL2Method

    model, x, y = setup
    x, y = x[:40], y[:40]  # ART's C&W is ~20x slower than ours
    ours = cw_l2(model, x, Goal(y), steps=30, lr=0.05, binary_search_steps=3, initial_c=1.0,
                 confidence=0.0)
    art = CarliniL2Method(_art(model), confidence=0.0, learning_rate=0.05, binary_search_steps=3,
                          max_iter=30, initial_const=1.0, batch_size=40, verbose=False)
    theirs = torch.from_numpy(art.generate(x.numpy(), y=y.numpy()))
    acc_ours, acc_theirs = _acc(model, ours, y), _acc(model, theirs, y)
    assert abs(acc_ours - acc_theirs) <= 0.01 + 1e-9, (acc_ours, acc_theirs)
    assert acc_ours < 0.1
    # minimal perturbations: on average no larger than the reference's (10% slack)
    l2_ours = float(perturbation_norm(x, ours, "l2").mean())
    l2_theirs = float(perturbation_norm(x, theirs, "l2").mean())
    assert l2_ours <= 1.1 * l2_theirs, (l2_ours, l2_theirs)
    check_adversarial(x, ours, y, y, "l2", None, "cw_l2")


def test_early_stop_never_raises_robust_accuracy(setup) -> None:
    model, x, y = setup
    full = pgd(model, x, Goal(y), norm="linf", eps=EPS, step_size=STEP, steps=STEPS, restarts=1,
               early_stop=False, gen=_gen())
    early = pgd(model, x, Goal(y), norm="linf", eps=EPS, step_size=STEP, steps=STEPS, restarts=1,
                early_stop=True, gen=_gen())
    assert _acc(model, early, y) <= _acc(model, full, y)
    check_adversarial(x, early, y, y, "linf", EPS, "pgd")


def test_l2_pgd_stays_in_ball(setup) -> None:
    model, x, y = setup
    adv = pgd(model, x, Goal(y), norm="l2", eps=1.0, step_size=0.25, steps=10, restarts=1,
              early_stop=False, gen=_gen())
    assert float(perturbation_norm(x, adv, "l2").max()) <= 1.0 + 1e-5
    assert _acc(model, adv, y) < _acc(model, x, y)


def test_run_attack_batches_and_validates(setup) -> None:
    model, x, y = setup
    spec = PgdSpec(kind="pgd", eps=EPS, step_size=STEP, steps=STEPS, targeted="least_likely")
    adv, targets = run_attack(spec, model, x[:64], y[:64], num_classes=10, batch_size=16, seed=0,
                              early_stop=False)
    assert adv.shape == x[:64].shape and targets is not None and len(targets) == 64
    with torch.no_grad():
        assert (targets == model(x[:64]).argsort(1)[:, 0]).all()  # least likely class
    again, _ = run_attack(spec, model, x[:64], y[:64], num_classes=10, batch_size=16, seed=0,
                          early_stop=False)
    assert torch.equal(adv, again)  # deterministic given the seed
    cw = CwL2Spec(kind="cw_l2", steps=5, lr=0.05, binary_search_steps=1, initial_c=1.0)
    adv_cw, _ = run_attack(cw, model, x[:8], y[:8], num_classes=10, batch_size=8, seed=0,
                           early_stop=False)
    assert adv_cw.shape == (8, 1, 16, 16)


def test_projection_and_random_start() -> None:
    gen = _gen()
    d = torch.randn(16, 3, 8, 8, generator=gen) * 3
    assert float(project(d, "linf", 0.1).abs().max()) <= 0.1 + 1e-7
    assert float(project(d, "l2", 0.5).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-6
    x = torch.rand(64, 1, 4, 4, generator=gen)
    assert float(random_start(x, "linf", 0.2, gen).abs().max()) <= 0.2 + 1e-7
    assert float(random_start(x, "l2", 0.3, gen).flatten(1).norm(dim=1).max()) <= 0.3 + 1e-6


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a + 0.2, "exceeds eps"),
        (lambda a: a - 2.0, "outside \\[0,1\\]"),
        (lambda a: a * float("nan"), "non-finite"),
    ],
)
def test_validity_check_catches_violations(mutate, message: str) -> None:
    x = torch.full((4, 1, 4, 4), 0.5)
    y = torch.arange(4)
    check_adversarial(x, x + 0.1, y, y, "linf", 0.1, "ok")
    with pytest.raises(AttackValidityError, match=message):
        check_adversarial(x, mutate(x.clone()), y, y, "linf", 0.1, "bad")
    with pytest.raises(AttackValidityError, match="labels changed"):
        check_adversarial(x, x, y, y.flip(0), "linf", 0.1, "bad")


def test_run_attack_fails_when_an_attack_changes_the_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The labels are compared with a copy taken before the attack, not with themselves."""
    import repurify.attacks as attacks

    def relabel(model, x, goal, **_):
        goal.y.add_(1)  # an attack that writes into the labels it was given
        return x

    monkeypatch.setitem(attacks.ATTACKS, "fgsm", relabel)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(AttackValidityError, match="labels changed"):
        run_attack(FgsmSpec(kind="fgsm", eps=0.1), model, x, y, num_classes=3, batch_size=2, seed=0,
                   early_stop=False)


def test_cw_with_confidence_counts_a_success_only_beyond_the_margin() -> None:
    """C&W with kappa > 0 keeps an iterate only where the wrong class leads by at least kappa."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(32, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    kappa = 0.3
    adv = cw_l2(model, x, Goal(y), steps=100, lr=0.05, binary_search_steps=3, initial_c=10.0,
                confidence=kappa)
    with torch.no_grad():
        logits = model(adv)
    moved = (adv - x).flatten(1).abs().amax(1) > 0
    assert moved.any()
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, y.view(-1, 1), float("-inf")).amax(1)
    assert (other[moved] - true[moved] >= kappa - 1e-4).all()


class _Alerting(nn.Module):
    """A model whose forward warns as torch's CUDA kernels do under deterministic algorithms."""

    def __init__(self, model: nn.Module, sigma: float = 0.0) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import warnings

        warnings.warn("upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation",
                      stacklevel=1)
        return self.model(x + self.sigma * torch.randn_like(x))


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_autoattack_notes_hold_the_packages_warnings_only(setup, sigma: float) -> None:
    """A warning the defended model raises is not AutoAttack's check; the package's own
    (here its randomized-defense check, under input noise) still reaches the notes."""
    from repurify.attacks.autoattack import autoattack

    model, x, y = setup
    notes: list[str] = []
    autoattack(_Alerting(model, sigma).eval(), x[:8], Goal(y[:8]), norm="linf", eps=0.1, version="custom",
               attacks=["apgd-ce"], seed=0, n_iter=2, notes=notes)
    assert not any("deterministic" in n for n in notes)
    assert any("randomized" in n for n in notes) == (sigma > 0)


class _Counting(nn.Module):
    """A fixed linear classifier that counts its calls and may declare ``independent_rows``."""

    def __init__(self, independent_rows: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 3)
        self.independent_rows, self.calls = independent_rows, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return self.linear(x.flatten(1))


def test_eot_stacks_the_draws_of_a_row_independent_model_into_one_call() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    looped, stacked = _Counting(False), _Counting(True)
    stacked.load_state_dict(looped.state_dict())
    grad_loop, logits_loop = input_gradient(looped, x, Goal(y), samples=20)
    grad_stack, logits_stack = input_gradient(stacked, x, Goal(y), samples=20)
    assert looped.calls == [5] * 20 and stacked.calls == [100]
    assert logits_stack.shape == logits_loop.shape == (20, 5, 3)
    torch.testing.assert_close(logits_stack, logits_loop)
    torch.testing.assert_close(grad_stack, grad_loop)  # the mean of the 20 draws' gradients
    assert torch.equal(draw_logits(stacked, x, 20), logits_stack)


def test_stacked_draws_stay_within_the_value_budget() -> None:
    model = _Counting(True)
    x = torch.rand(4, 1, 4, 4)
    assert draws_per_call(model, x, 20) == min(20, STACKED_VALUES // x.numel())
    assert draws_per_call(model, torch.rand(2, 1, 1024, 1024), 20) == 1  # a single copy exceeds it
    assert draws_per_call(_Counting(False), x, 20) == draws_per_call(model, x, 1) == 1
