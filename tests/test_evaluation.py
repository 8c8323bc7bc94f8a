"""Evaluation plumbing: Papernot substitute, held-out seeds, white-box limits and protocols,
report rendering."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from repurify import evaluation
from repurify.blackbox import jacobian_augment, train_papernot_substitute
from repurify.data import load_split
from repurify.defenses import DefendedModel, Identity, Purifier
from repurify.errors import ParamsError
from repurify.evaluation import Scoring, apgd_covered_by, limited, load_eval_data, whitebox_rows
from repurify.params import (
    AdaptiveParams,
    AutoAttackSpec,
    ClassifierParams,
    EvaluationLimit,
    FgsmSpec,
    PgdSpec,
    load_params,
)
from repurify.report import render_markdown, summary_rows
from tests.repo_copy import ROOT


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def test_jacobian_augmentation_moves_along_the_label_gradient() -> None:
    model = _mlp()
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1])
    new = jacobian_augment(model, x, labels, lam=0.1)
    assert new.shape == x.shape and float(new.min()) >= 0 and float(new.max()) <= 1
    assert float((new - x).abs().max()) <= 0.1 + 1e-6
    with torch.no_grad():
        before = model(x).gather(1, labels.view(-1, 1))
        after = model(new).gather(1, labels.view(-1, 1))
    assert (after >= before - 1e-6).all()  # the label's logit grows (first order)


def test_papernot_substitute_queries_and_learns_the_oracle() -> None:
    torch.manual_seed(0)
    oracle = _mlp().eval()
    seeds = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    substitute = _mlp()
    cfg = ClassifierParams(arch="small_cnn", epochs=1, batch_size=16, optimizer="adam", lr=0.01)
    stats = train_papernot_substitute(oracle, substitute, seeds, rounds=3, epochs_per_round=30,
                                      lam=0.1, cfg=cfg, device=torch.device("cpu"),
                                      gen=torch.Generator().manual_seed(2))
    assert stats == {"oracle_queries": 30 + 60 + 120, "substitute_train_size": 120}
    probe = torch.rand(200, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        agree = (substitute(probe).argmax(1) == oracle(probe).argmax(1)).float().mean()
    assert agree > 0.6  # chance is ~1/3


def test_eval_data_holds_out_papernot_seeds() -> None:
    prof = load_params(ROOT / "params.yaml", profile="smoke").active
    split = load_split(prof.data)
    data = load_eval_data(split, prof)
    n, k = prof.evaluation.n, prof.evaluation.papernot.seed_images
    assert data.x.shape[0] == n and data.seeds.shape[0] == k
    assert torch.equal(data.seeds, split.x_test[n:n + k].float() / 255)
    too_many = prof.model_copy(update={"evaluation": prof.evaluation.model_copy(update={"n": 79})})
    with pytest.raises(ParamsError, match=r"evaluation.n \(79\) \+ .* exceeds the 80 test images"):
        load_eval_data(split, too_many)
    # more images than the split holds: the seeds' source would not help
    past = prof.model_copy(update={"evaluation": prof.evaluation.model_copy(update={"n": 81})})
    with pytest.raises(ParamsError, match=r"evaluation.n \(81\) exceeds the 80 test images; lower it$"):
        load_eval_data(split, past)


def test_eval_data_can_take_papernot_seeds_from_the_training_split() -> None:
    # a profile that evaluates its whole test split (flowers17's 340 images) has no test seeds left
    prof = load_params(ROOT / "params.yaml", profile="smoke").active
    split = load_split(prof.data)
    ev = prof.evaluation
    whole = prof.model_copy(update={"evaluation": ev.model_copy(update={
        "n": len(split.y_test), "papernot": ev.papernot.model_copy(update={"seeds_from": "train"})})})
    data = load_eval_data(split, whole)
    k = ev.papernot.seed_images
    assert torch.equal(data.x, split.x_test.float() / 255)
    assert torch.equal(data.seeds, split.x_train[:k].float() / 255)
    test_seeds = ev.model_copy(update={"n": len(split.y_test)})
    with pytest.raises(ParamsError, match="seeds_from: train"):
        load_eval_data(split, whole.model_copy(update={"evaluation": test_seeds}))


class _Oracle(nn.Module):
    """Predicts the label stored in the first pixel: correct only where that pixel says so."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot((x[:, 0, 0, 0] * 255).round().long(), 3).float()


def test_eval_data_per_class_takes_correctly_classified_images() -> None:
    """OAG Sec. IV-A: k correctly classified test images per class, in test order."""
    y = torch.tensor([0, 1, 1, 2, 0, 2, 1, 0, 2, 0])
    predicted = torch.tensor([0, 2, 1, 2, 0, 2, 1, 1, 2, 0])  # wrong at 1 and 7
    x = torch.zeros(10, 1, 2, 2, dtype=torch.uint8)
    x[:, 0, 0, 0] = predicted.to(torch.uint8)
    split = SimpleNamespace(x_test=x, y_test=y, classes=["a", "b", "c"])
    prof = load_params(ROOT / "params.yaml", profile="smoke").active
    ev = prof.evaluation.model_copy(update={"n": 6, "per_class": 2, "papernot": prof.evaluation.papernot
                                            .model_copy(update={"seed_images": 3})})
    prof = prof.model_copy(update={"evaluation": ev})
    data = load_eval_data(split, prof, _Oracle())
    assert data.y.tolist() == [0, 1, 2, 0, 2, 1]  # test indices 0, 2, 3, 4, 5, 6
    assert torch.equal(data.seeds, x[[1, 7, 8]].float() / 255)  # the first images not picked
    wrong_n = prof.model_copy(update={"evaluation": ev.model_copy(update={"n": 8})})
    with pytest.raises(ParamsError, match=r"evaluation.n: 8, but evaluation.per_class 2 selects 6"):
        load_eval_data(split, wrong_n, _Oracle())


def test_report_tables() -> None:
    ev = {"clean_accuracy": 0.9, "n": 10, "results": [
        {"attack": "pgd", "threat_model": "oblivious", "source": "target", "accuracy": 0.5, "n": 10},
        {"attack": "pgd", "threat_model": "blackbox", "source": "transfer", "accuracy": 0.6, "n": 10},
        {"attack": "pgd", "threat_model": "blackbox", "source": "papernot", "accuracy": 0.7, "n": 10},
        {"attack": "pgd", "threat_model": "whitebox", "accuracy": 0.05, "n": 10},
        {"attack": "autoattack", "threat_model": "whitebox", "accuracy": 0.0, "n": 4},
    ]}
    rows = summary_rows({"none": ev})
    assert rows[0] == {"defense": "none", "attack": "clean", "threat_model": "none",
                       "accuracy": 0.9, "n": 10}
    assert len(rows) == 6
    trained = {"advae": {"spec": {"kind": "advae", "architecture": "conv_ae", "lam": 0.0,
                                  "classifiers": ["target"]},
                         "train_examples": 90, "epochs_run": 12, "best_epoch": 1,
                         "best_val_loss": 0.25, "clean_accuracy": 0.97}}
    md = render_markdown("p", "desc", {"target": {"arch": "a", "clean_accuracy": 0.99, "n_test": 100}},
                         rows, trained)
    assert ("| advae | architecture=conv_ae, classifiers=['target'], lam=0.0 | 90 | 12 | 2 | "
            "0.2500 | 97.0 |") in md
    # every row with its image count and standard error, sqrt(p(1-p)/n) for 0/1 scores
    assert "## Defense `none` (clean 90.0 ± 9.5, n 10)" in md
    assert "| pgd | 10 | 50.0 ± 15.8 | 60.0 ± 15.5 | 70.0 ± 14.5 | 5.0 ± 6.9 |" in md
    assert "| autoattack | 4 |  |  |  | 0.0 ± 0.0 |" in md
    assert "| target | a | 100 | 99.0 ± 1.0 |" in md


def test_report_opens_with_the_worst_case_and_verdict() -> None:
    def ev(randomized: bool, wc: float, source: str | None) -> dict:
        pgd = {"attack": "pgd", "threat_model": "whitebox", "accuracy": 0.4, "n": 10}
        paper = {**pgd, "accuracy": 0.9, **({"source": source} if source else {})}
        if source == "target":
            paper["threat_model"] = "oblivious"
        return {"clean_accuracy": 0.95, "n": 10, "randomized": randomized, "results": [pgd, paper],
                "worst_case": {"accuracy": wc, "se": 0.05, "n": 10, "accuracy_all_draws": wc / 2,
                               "strongest": "adaptive pgd-200x10 (whitebox)"},
                "convergence": {"n": 10, "steps": [{"steps": 100, "accuracy": 0.3},
                                                   {"steps": 200, "accuracy": 0.2}],
                                "restarts": [{"restarts": 1, "accuracy": 0.2},
                                             {"restarts": 10, "accuracy": 0.1}]}}

    evaluations = {"none": ev(False, 0.1, None), "egcfl": ev(False, 0.2, "autograd"),
                   "gcln": ev(False, 0.2, "autograd"), "oag": ev(True, 0.3, "target")}
    masking = {"none": {"verdict": "not detected", "not_run": [], "weak": [], "checks": []},
               "egcfl": {"verdict": "inconclusive", "not_run": ["attack converged"], "weak": [],
                         "checks": []},
               "gcln": {"verdict": "suspected", "not_run": [], "weak": [], "checks": []},
               "oag": {"verdict": "suspected", "not_run": [], "weak": ["gradient-free <= gradient"],
                       "checks": []}}
    md = render_markdown("p", "desc", {}, summary_rows(evaluations), {}, masking=masking,
                         evaluations=evaluations)
    assert md.index("## Worst case and verdict") < md.index("## Classifiers")
    assert ("| none | 95.0 | no paper | 40.0 | 10.0 ± 5.0 (10) | adaptive pgd-200x10 (whitebox) | "
            "**not detected** |") in md
    assert "| egcfl | 95.0 | 90.0 (whitebox (autograd)) | 40.0 | 20.0 ± 5.0 (10) |" in md
    # GCLN's paper does not state its white-box gradients: its autograd rows are no protocol of its
    assert "| gcln | 95.0 | not stated | 40.0 | 20.0 ± 5.0 (10) |" in md
    gcln = md[md.index("## Defense `gcln`"):md.index("## Defense `oag`")]
    assert "*whitebox (autograd)*: autograd (zero gradient): a masking demonstration" in gcln
    assert "masking demonstration" not in md[md.index("## Defense `egcfl`"):md.index("## Defense `gcln`")]
    assert "**inconclusive (not run: attack converged)** |" in md
    assert "| oag | 95.0 | 90.0 (oblivious) | 40.0 | 30.0 ± 5.0 (10) [15.0] |" in md  # all draws
    assert "**suspected (weak: gradient-free <= gradient)** |" in md
    assert "| gcln | 10 | 30.0 | 20.0 | 20.0 | 10.0 |" in md  # convergence: steps, then restarts


def test_report_autograd_column_and_ablations() -> None:
    ev = {"clean_accuracy": 0.9, "n": 10, "results": [
        {"attack": "pgd", "threat_model": "whitebox", "accuracy": 0.2, "n": 10},
        {"attack": "pgd", "threat_model": "whitebox", "source": "autograd", "accuracy": 0.95, "n": 10},
    ]}
    ablation = {"rows": [
        {"variant": "egcfl_gen1", "attack": "clean", "threat_model": "none", "accuracy": 0.99, "n": 100},
        {"variant": "egcfl_gen1", "attack": "pgd", "threat_model": "whitebox", "accuracy": 0.4, "n": 100},
        {"variant": "gcln_q2", "attack": "clean", "threat_model": "none", "accuracy": 0.98, "n": 100},
        {"variant": "gcln_q2", "attack": "pgd", "threat_model": "whitebox", "source": "autograd",
         "accuracy": 0.97, "n": 50, "se": 0.03}],
        "noise_energy": {"attack": "pgd", "before": [1.0, 2.0], "after": [0.5, 1.0],
                         "mean_before": 1.5, "mean_after": 0.75, "ratio": 0.5}}
    md = render_markdown("p", "desc", {}, summary_rows({"gcln": ev}), {}, None, ablation)
    assert "| attack | n | oblivious | blackbox (transfer) | blackbox (papernot) | whitebox | " \
           "whitebox (autograd) |" in md
    assert "| pgd | 10 |  |  |  | 20.0 ± 12.6 | 95.0 ± 6.9 |" in md
    assert "| variant | n | clean | pgd whitebox | pgd whitebox (autograd) |" in md
    assert "| egcfl_gen1 | 100 | 99.0 ± 1.0 | 40.0 ± 4.9 |  |" in md
    assert "| gcln_q2 | 100/50 | 98.0 ± 1.4 |  | 97.0 ± 3.0 |" in md  # a row's own se comes first
    assert "1.500 before the TDZ, 0.750 after it (ratio 0.500)" in md


class _Noisy(Purifier):
    randomized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.01 * torch.randn_like(x)).clamp(0, 1)


def test_whitebox_limits_and_autoattack_rand_for_randomized(monkeypatch: pytest.MonkeyPatch) -> None:
    """Randomized purifiers are attacked with EOT draws (AutoAttack as `rand`, judged point by
    point) and every row is scored on fresh draws; a limit keeps the listed attacks on at most n
    images."""
    calls = []

    def fake_attack(spec, model, x, y, *, samples, **_):
        calls.append((spec.kind, getattr(spec, "version", None), samples, len(x)))
        return x, None

    monkeypatch.setattr(evaluation, "run_attack", fake_attack)
    specs = [("fgsm", FgsmSpec(kind="fgsm", eps=0.1)),
             ("pgd", PgdSpec(kind="pgd", eps=0.1, step_size=0.05, steps=2, n=2)),
             ("autoattack", AutoAttackSpec(kind="autoattack", eps=0.1))]
    kept = limited(specs, EvaluationLimit(whitebox_attacks=["pgd", "autoattack"], n=3))
    assert [(a, s.n) for a, s in kept] == [("pgd", 2), ("autoattack", 3)]
    assert limited(specs, None) == specs
    x, y = torch.rand(5, 16), torch.zeros(5, dtype=torch.long)
    noisy = DefendedModel(_Noisy(), _mlp())
    rows = whitebox_rows(noisy, kept, x, y, num_classes=3, seed=0,
                         scoring=Scoring.of(noisy, 8, eot_samples=4, draws=5))
    assert calls == [("pgd", None, 4, 2), ("autoattack", "rand", 4, 3)]
    assert [(r["eot_samples"], r["draws"], r.get("version")) for r in rows] == [(4, 5, None), (4, 5, "rand")]
    assert [len(r["correct"]) for r in rows] == [2, 3] and "autoattack_warnings" in rows[1]
    calls.clear()
    plain = DefendedModel(Identity(), _mlp())
    rows = whitebox_rows(plain, kept, x, y, num_classes=3, seed=0,
                         scoring=Scoring.of(plain, 8, eot_samples=4, draws=5))
    assert calls == [("pgd", None, 1, 2), ("autoattack", "standard", 1, 3)]
    assert {r["draws"] for r in rows} == {1} and set(rows[0]["correct"]) <= {0.0, 1.0}


def test_the_adaptive_apgd_is_skipped_only_where_autoattack_standard_runs_it_already() -> None:
    adaptive = AdaptiveParams(n=100, eps=0.1, step_size=0.01)
    aa = AutoAttackSpec(kind="autoattack", eps=0.1, n=100)
    other = [("pgd", PgdSpec(kind="pgd", eps=0.1, step_size=0.01, steps=20))]
    assert apgd_covered_by([*other, ("aa", aa)], adaptive, randomized=False) == "aa"
    assert apgd_covered_by([*other, ("aa", aa)], adaptive, randomized=True) == "aa"  # its rand version
    assert apgd_covered_by(other, adaptive, randomized=False) is None
    for update in ({"n": 50}, {"eps": 0.05}, {"n_iter": 50}):
        assert apgd_covered_by([("aa", aa.model_copy(update=update))], adaptive, randomized=False) is None
    custom = AutoAttackSpec(kind="autoattack", eps=0.1, version="custom", attacks=["apgd-ce"])
    assert apgd_covered_by([("aa", custom)], adaptive, randomized=False) is None
    dlr = adaptive.model_copy(update={"autoattack": ["apgd-ce", "apgd-dlr"]})
    assert apgd_covered_by([("aa", aa)], dlr, randomized=False) is None  # standard runs no APGD-DLR
