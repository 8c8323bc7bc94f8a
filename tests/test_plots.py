"""Figures: series rows from the stages' JSON, CSV for `dvc plots`, PNGs, image grids."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from repurify import plots
from repurify.plots import PLOTS

PNG = b"\x89PNG\r\n\x1a\n"


def _probes() -> dict:
    sweep = [{"eps": 0.1, "accuracy": 0.3, "iterations": [0.9, 0.5, 0.3]},
             {"eps": 1.0, "accuracy": 0.0, "iterations": [0.9, 0.1, 0.0]}]
    return {"hgd": {"attack_eps": 0.1, "eps_sweep": sweep}}


def test_sweep_and_iteration_rows() -> None:
    assert plots.eps_sweep_rows(_probes()) == [{"eps": 0.1, "accuracy": 0.3, "series": "hgd"},
                                               {"eps": 1.0, "accuracy": 0.0, "series": "hgd"}]
    assert [r["accuracy"] for r in plots.iteration_rows(_probes())] == [0.9, 0.5, 0.3]


def test_ablation_rows() -> None:
    ablation = {"rows": [
        {"variant": "egcfl_gen1", "generations": 1, "attack": "pgd", "threat_model": "whitebox",
         "accuracy": 0.4},
        {"variant": "egcfl_gen1", "generations": 1, "attack": "clean", "threat_model": "none",
         "accuracy": 0.9},
        {"variant": "gcln_q0.2", "attack": "pgd", "threat_model": "whitebox", "source": "autograd",
         "accuracy": 0.7, "n": 40},
        {"variant": "gcln_q0.2", "attack": "fgsm", "threat_model": "oblivious", "accuracy": 0.6, "n": 40}],
        "noise_energy": {"before": [2.0, 1.0], "after": [1.0, 0.5]}}
    assert plots.gen_k_rows(ablation) == [{"generations": 1, "accuracy": 0.4, "series": "pgd whitebox"}]
    slot = [{"attack": "pgd", "threat_model": "whitebox", "source": "autograd", "accuracy": 0.9, "n": 40},
            {"attack": "pgd", "threat_model": "whitebox", "source": "autograd", "accuracy": 0.8, "n": 20},
            {"attack": "fgsm", "threat_model": "whitebox", "accuracy": 0.1, "n": 40},  # no variant
            # the slot's oblivious row names its source; the ablation's does not: the same examples
            {"attack": "fgsm", "threat_model": "oblivious", "source": "target", "accuracy": 0.5, "n": 40}]
    rows = plots.key_sweep_rows(ablation, {"gcln_q0.2": 0.2}, "q", 0.125, slot)
    assert rows == [{"q": 0.125, "accuracy": 0.5, "series": "fgsm oblivious"},
                    {"q": 0.2, "accuracy": 0.6, "series": "fgsm oblivious"},
                    {"q": 0.125, "accuracy": 0.9, "series": "pgd whitebox (autograd)"},
                    {"q": 0.2, "accuracy": 0.7, "series": "pgd whitebox (autograd)"}]
    noise = plots.noise_energy_rows(ablation)
    assert [r["series"] for r in noise] == ["before TDZ"] * 2 + ["after TDZ"] * 2
    assert plots.noise_energy_rows({"rows": []}) == []


def test_series_with_the_same_points_share_a_labelled_line() -> None:
    rows = [{"eps": e, "accuracy": a, "series": s} for s, pts in
            (("none", [(0.1, 0.0), (1.0, 0.0)]), ("jpeg", [(0.1, 0.0), (1.0, 0.0)]),
             ("hgd", [(0.1, 0.2), (1.0, 0.0)])) for e, a in pts]
    lines = plots.coinciding(rows, PLOTS["eps_sweep"])
    assert list(lines.values()) == [["none", "jpeg"], ["hgd"]]
    assert plots.shared_points(lines) == 1  # (1.0, 0.0) lies on both lines: the figure says so


def test_csv_png_and_grid(tmp_path: Path) -> None:
    plot = PLOTS["eps_sweep"]
    rows = plots.eps_sweep_rows(_probes())
    plots.write_csv(tmp_path / "a.csv", plot, rows)
    with open(tmp_path / "a.csv", encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == [{k: str(v) for k, v in r.items()} for r in rows]
    plots.write_csv(tmp_path / "empty.csv", plot, [])
    assert (tmp_path / "empty.csv").read_text() == "eps,accuracy,series\n"
    for name, data in (("a", rows), ("empty", [])):
        plots.draw(tmp_path / f"{name}.png", plot, data)
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG
    images = torch.rand(3, 1, 8, 8)
    plots.image_grid(tmp_path / "g.png", {"clean": images, "adv": images, "out": images[:2]}, "t")
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG
    assert not list(tmp_path.glob("*.tmp"))
