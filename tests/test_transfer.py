"""Model transfer grid: variants of the defense slots, labels, params checks, the report table."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from repurify.errors import ParamsError
from repurify.params import TransferEntry, load_params, validate_params
from repurify.report import collapsed, render_markdown
from repurify.transfer import label, run_grid, variant
from tests.repo_copy import ROOT


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    from repurify.params import read_yaml

    return read_yaml(ROOT / "params.yaml")


def test_variant_replaces_the_classifiers_or_the_guide() -> None:
    prof = load_params(ROOT / "params.yaml", profile="digits").active
    override = {"epochs": 3, "batch_size": 8, "lr_decay": 0.5, "plateau_patience": 1}
    ae = variant(prof.defenses["advae"], TransferEntry(defense="advae", trained_on=["X", "A", "B"],
                                                        evaluated_on=["C"], training=override))
    assert ae.classifiers == ["X", "A", "B"] and ae.training.epochs == 3
    assert ae.pgd == prof.defenses["advae"].pgd  # everything else is the slot's
    hgd = variant(prof.defenses["hgd"], TransferEntry(defense="hgd", trained_on=["substitute"],
                                                       evaluated_on=["target"]))
    assert hgd.guide == "substitute" and hgd.training == prof.defenses["hgd"].training
    assert hgd.sources == prof.defenses["hgd"].sources
    assert label(["X"]) == "X" and label(["X", "A", "B"]) == "{X,A,B}"


def test_digits_full_grid_is_advae_table_3_and_hgd_table_4() -> None:
    tr = load_params(ROOT / "params.yaml", profile="digits_full").active.transfer
    assert {k: z.arch for k, z in tr.zoo.items()} == {"X": "mnist_x", "A": "mnist_a", "B": "mnist_b",
                                                      "C": "mnist_c", "D": "mnist_d"}
    cells = [(e.defense, e.trained_on, e.evaluated_on) for e in tr.grid]
    assert ("advae", ["X"], ["X", "A", "B", "C", "D"]) in cells
    assert ("advae", ["X", "A", "B"], ["A", "B", "C", "D"]) in cells
    assert ("hgd", ["substitute"], ["target"]) in cells


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"defense": "advae", "trained_on": ["Y"], "evaluated_on": ["A"]},
         "transfer.grid.0.trained_on: ['Y'] are not classifiers"),
        ({"defense": "advae", "trained_on": ["X"], "evaluated_on": ["Q"]},
         "transfer.grid.0.evaluated_on: ['Q'] are not classifiers"),
        ({"defense": "hgd", "trained_on": ["X", "A"], "evaluated_on": ["A"]},
         "transfer.grid.0.trained_on: HGD is guided by one classifier"),
        ({"defense": "jpeg", "trained_on": ["X"], "evaluated_on": ["A"]},
         "transfer.grid.0.defense: slot 'jpeg' holds a 'jpeg' defense; this runs ['hgd', 'advae', 'oag']"),
        ({"defense": "pixeldefend", "evaluated_on": ["A"]},
         "transfer.grid.0.defense: 'pixeldefend' is not a defense slot; choose from ['none'"),
        ({"defense": "advae", "evaluated_on": ["A"]},
         "transfer.grid.0.trained_on: give it for trained defenses only"),
        ({"defense": "oag", "trained_on": ["X"], "evaluated_on": ["A"]},
         "transfer.grid.0.trained_on: give it for trained defenses only (OAG trains nothing)"),
        ({"defense": "oag", "evaluated_on": ["A"], "attacks": {"B": ["pgd"]}},
         "transfer.grid.0.attacks.B: not in evaluated_on"),
        ({"defense": "oag", "evaluated_on": ["A"], "attacks": {"A": ["nope"]}},
         "transfer.grid.0.attacks.A: ['nope'] are not keys of attacks"),
    ],
)
def test_bad_grid_entries_name_the_key(raw: dict[str, Any], entry: dict, message: str) -> None:
    bad = copy.deepcopy(raw)
    bad["profiles"]["digits_full"]["transfer"]["grid"] = [entry]
    with pytest.raises(ParamsError) as err:
        validate_params(bad)
    assert "profiles.digits_full.transfer" in str(err.value) and message in str(err.value)


def test_zoo_may_not_shadow_a_role_and_attacks_must_exist(raw: dict[str, Any]) -> None:
    bad = copy.deepcopy(raw)
    tr = bad["profiles"]["digits_full"]["transfer"]
    tr["zoo"]["target"] = tr["zoo"]["X"]
    with pytest.raises(ParamsError, match=r"transfer\.zoo: \['target'\] would shadow"):
        validate_params(bad)
    bad = copy.deepcopy(raw)
    bad["profiles"]["digits_full"]["transfer"]["attacks"] = ["pgd", "deepfool"]
    with pytest.raises(ParamsError, match=r"transfer\.attacks: \['deepfool'\] are not keys"):
        validate_params(bad)


def test_run_grid_rows_cover_every_pair_and_attack(tmp_path) -> None:
    from repurify.defenses.base import Identity
    from repurify.models import build_classifier

    prof = load_params(ROOT / "params.yaml", profile="smoke").active
    torch.manual_seed(0)
    classifiers = {name: build_classifier(arch, (1, 16, 16), 10, (0.5,), (0.25,)).eval()
                   .requires_grad_(False)
                   for name, arch in (("target", "small_cnn"), ("substitute", "mnist_a"),
                                      ("D", "mnist_d"))}
    gen = torch.Generator().manual_seed(0)
    train = (torch.rand(40, 1, 16, 16, generator=gen), torch.randint(0, 10, (40,), generator=gen))
    test = (torch.rand(30, 1, 16, 16, generator=gen), torch.randint(0, 10, (30,), generator=gen))
    # OAG Table III: gray-box, one attack per target network
    oag = TransferEntry(defense="oag", evaluated_on=["target", "D"], threat_models=["oblivious"],
                        attacks={"D": ["pgd"]})
    prof = prof.model_copy(update={"transfer": prof.transfer.model_copy(
        update={"grid": [*prof.transfer.grid, oag]})})
    chosen = {"eps_g": 1.0, "beta": 1e-4, "init_std": 0.01, "network_steps": 2}
    rows = run_grid(prof, classifiers, train, test, oag_chosen=chosen, num_classes=10, seed=0,
                    device=torch.device("cpu"), out_dir=tmp_path, slots={"hgd": Identity()})
    assert sorted((r["column"], r["attack"], r["threat_model"]) for r in rows) == sorted(
        [("{target,substitute}/D", "clean", "none"), ("{target,substitute}/D", "fgsm", "whitebox"),
         # HGD Table 4: oblivious (ours: crafted on the evaluated model) and white-box beside
         ("substitute/target", "clean", "none"), ("substitute/target", "fgsm", "oblivious"),
         ("substitute/target", "fgsm", "whitebox"),
         # the slot's own HGD (here a stand-in) before the substitute: nothing trained
         ("target/substitute", "clean", "none"), ("target/substitute", "fgsm", "oblivious"),
         ("online/target", "clean", "none"), ("online/target", "fgsm", "oblivious"),
         ("online/D", "clean", "none"), ("online/D", "pgd", "oblivious")])
    assert all(r["n"] == prof.transfer.n and 0 <= r["accuracy"] <= 1 for r in rows)
    gray = [r for r in rows if r["defense"] == "oag" and r["attack"] != "clean"]
    assert {r["threat_model"] for r in gray} == {"oblivious"}
    assert all(0 <= r["undefended_accuracy"] <= 1 for r in gray)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0_advae.pt", "1_hgd.pt"]  # OAG: nothing


def test_an_entry_running_its_slot_unchanged_takes_the_slots_trained_defense(tmp_path) -> None:
    from repurify.defenses import Purifier
    from repurify.models import build_classifier
    from repurify.transfer import reused, unchanged

    prof = load_params(ROOT / "params.yaml", profile="smoke").active
    same = TransferEntry(defense="hgd", trained_on=[prof.defenses["hgd"].guide], evaluated_on=["substitute"],
                         threat_models=["oblivious"])
    prof = prof.model_copy(update={"transfer": prof.transfer.model_copy(update={"grid": [same]})})
    assert unchanged(prof, same) and reused(prof) == ["hgd"]

    class Shift(Purifier):  # a stand-in for the trained slot: its rows must come from it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x + 1) / 2

    torch.manual_seed(0)
    classifiers = {name: build_classifier("mnist_a", (1, 16, 16), 10, (0.5,), (0.25,)).eval()
                   .requires_grad_(False) for name in ("target", "substitute")}
    gen = torch.Generator().manual_seed(0)
    train = (torch.rand(40, 1, 16, 16, generator=gen), torch.randint(0, 10, (40,), generator=gen))
    test = (torch.rand(30, 1, 16, 16, generator=gen), torch.randint(0, 10, (30,), generator=gen))
    kw = {"oag_chosen": None, "num_classes": 10, "seed": 0, "device": torch.device("cpu"),
          "out_dir": tmp_path}
    with pytest.raises(ValueError, match="grid entry 0 runs the slot 'hgd' unchanged"):
        run_grid(prof, classifiers, train, test, **kw)
    rows = run_grid(prof, classifiers, train, test, slots={"hgd": Shift()}, **kw)
    assert not list(tmp_path.iterdir())  # nothing trained, nothing saved
    assert {r["slot"] for r in rows} == {"train_defense_hgd"}
    clean = next(r for r in rows if r["attack"] == "clean")
    x, y = test[0][:prof.transfer.n], test[1][:prof.transfer.n]
    expected = (classifiers["substitute"]((x + 1) / 2).argmax(1) == y).float().mean().item()
    assert clean["accuracy"] == pytest.approx(expected)


def test_report_has_the_transfer_table() -> None:
    rows = [{"defense": "none", "attack": "clean", "threat_model": "none", "accuracy": 0.9, "n": 1}]
    transfer = {"zoo": {"A": {"arch": "mnist_a", "clean_accuracy": 0.98}}, "rows": [
        {"defense": "advae", "column": "X/A", "attack": "clean", "threat_model": "none", "accuracy": 0.97,
         "n": 100},
        {"defense": "advae", "column": "X/A", "attack": "pgd", "threat_model": "whitebox", "accuracy": 0.5,
         "n": 100},
        {"defense": "advae", "column": "{X,A,B}/A", "attack": "pgd", "threat_model": "whitebox",
         "accuracy": 0.75, "n": 100},
        {"defense": "oag", "column": "online/A", "attack": "bim", "threat_model": "oblivious",
         "accuracy": 0.8, "undefended_accuracy": 0.1, "n": 100}]}
    md = render_markdown("p", "d", {}, rows, {}, transfer)
    assert "| A | mnist_a | 98.0 |" in md
    assert "### `advae` (whitebox)" in md and "### `oag` (oblivious)" in md
    assert "| attack | n | X/A | {X,A,B}/A |" in md
    assert "| bim | 100 | 80.0 ± 4.0 |" in md and "| bim, no defense | 100 | 10.0 ± 3.0 |" in md
    assert "| pgd | 100 | 50.0 ± 5.0 | 75.0 ± 4.3 |" in md and "| clean | 100 | 97.0 ± 1.7 |  |" in md


def test_a_purifier_at_chance_on_clean_images_is_flagged_collapsed() -> None:
    def clean(column: str, accuracy: float) -> dict:
        return {"defense": "advae", "column": column, "evaluated_on": column.split("/")[1],
                "attack": "clean", "threat_model": "none", "accuracy": accuracy, "n": 300}

    # 10 classes, 300 images: chance 10%, two standard errors 3.5 points; classifier E is itself at
    # chance, F has no record: neither is the purifier's fault
    bare = {"X": 0.99, "A": 0.98, "B": 0.98, "D": 0.93, "E": 0.11}
    rows = [clean("X/X", 0.093), clean("X/D", 0.13), clean("{X,A,B}/A", 0.973), clean("X/B", 0.14),
            clean("X/E", 0.1), clean("X/F", 0.1),
            {**clean("X/X", 0.0), "attack": "pgd", "threat_model": "whitebox"}]
    dead = collapsed(rows, 10, bare)
    assert [c["column"] for c in dead] == ["X/X", "X/D"]
    md = render_markdown("p", "d", {}, [], {}, {"zoo": {}, "rows": rows, "collapsed": dead})
    assert "**Collapsed: X/X, X/D.** Clean accuracy is at chance" in md
    assert "Collapsed" not in render_markdown("p", "d", {}, [], {}, {"zoo": {}, "rows": rows})
