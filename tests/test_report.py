"""Report sections: gradient-masking verdicts, claimed vs reproduced, figures."""

from __future__ import annotations

from typing import Any

from repurify.report import _ablation_lines, _calibration_lines, _convergence_lines, render_markdown


def _claim(**kw) -> dict:
    return {"id": "egcfl-t1-01", "source": "Table 1", "dataset": "cifar10", "classifier": "ResNet-18",
            "method": "EGC-FL", "defense": "egcfl", "attack": "pgd", "profile_attack": "pgd",
            "threat_model": "whitebox",
            "threat_model_paper": "white-box", "gradient": "autograd", "eps": "8/256", "claimed": 0.85,
            "paper_protocol": 0.9, "adaptive": 0.3, "setting_differs": [], **kw}


def test_masking_claims_and_figures_sections() -> None:
    masking = {"gcln": {"verdict": "suspected", "failed": ["non-zero gradients"],
                        "paper_protocol_masked": True,
                        "checks": [{"name": "non-zero gradients", "status": "fail", "evidence": "30.0% ..."},
                                   {"name": "autograd protocol not masked", "status": "fail",
                                    "evidence": "pgd: autograd 99.0 vs BPDA 28.0"}]}}
    comparison = {"egcfl": [_claim(), _claim(id="egcfl-t4-01", dataset="svhn",
                                             setting_differs=["dataset cifar10 vs svhn"])],
                  "hgd": []}
    md = render_markdown("p", "d", {}, [], {}, masking=masking,
                         claims=(comparison, {"egcfl": "EGC-FL", "hgd": "HGD"}),
                         figures={"eps curve": "figures/eps_sweep.png"})
    assert "| gcln | **suspected** | fail | fail |" in md
    assert "  - non-zero gradients (fail): 30.0% ..." in md
    assert ("| egcfl-t1-01 | Table 1 | EGC-FL (egcfl) | cifar10 | ResNet-18 | white-box: whitebox | "
            "pgd (pgd) | 8/256 | 85.0 | 90.0 | +5.0 | 30.0 | -55.0 | same |") in md
    assert ("| 85.0 | 90.0 | setting differs | 30.0 | setting differs | differs: dataset cifar10 vs "
            "svhn |") in md
    assert "### hgd: HGD\n\nNo claim about a reproduced configuration." in md
    unstated = render_markdown("p", "d", {}, [], {}, claims=(
        {"egcfl": [_claim(threat_model_paper=None)]}, {"egcfl": "EGC-FL"}))
    assert "| ResNet-18 | not stated: whitebox | pgd (pgd) |" in unstated
    assert "![eps curve](figures/eps_sweep.png)" in md


def test_convergence_columns_are_the_union_of_probed_ladders() -> None:
    def conv(steps: dict[int, float], restarts: dict[int, float], n: int) -> dict:
        return {"convergence": {"n": n, "steps": [{"steps": s, "accuracy": a} for s, a in steps.items()],
                                "restarts": [{"restarts": r, "accuracy": a} for r, a in restarts.items()]}}

    md = "\n".join(_convergence_lines({"egcfl": conv({25: .42, 50: .33}, {1: .3, 5: .2}, 100),
                                        "oag": conv({5: .95, 50: .8}, {1: .8, 2: .7}, 20)}))
    assert "| defense | n | 5 steps | 25 steps | 50 steps | 1 restarts | 2 restarts | 5 restarts |" in md
    assert "| egcfl | 100 |  | 42.0 | 33.0 | 30.0 |  | 20.0 |" in md
    assert "| oag | 20 | 95.0 |  | 80.0 | 80.0 | 70.0 |  |" in md


def test_report_says_which_defenses_saw_the_black_box_model() -> None:
    """HGD Sec. 4.1: the black-box set comes from a held-out model; the report names it."""
    def trained(**spec: Any) -> dict[str, Any]:
        return {"spec": spec, "train_examples": 10, "epochs_run": 1, "best_epoch": 0,
                "best_val_loss": 0.1, "clean_accuracy": 0.9}

    md = render_markdown("p", "d", {"substitute": {"arch": "mnist_a", "clean_accuracy": 0.9}}, [],
                         {"hgd": trained(sources=["target"]), "gcln": trained(source="substitute"),
                          "advae": trained(classifiers=["target"])})
    assert "- `hgd`: training examples crafted on target; the substitute (mnist_a) is held out" in md
    assert "- `gcln`: training examples crafted on substitute; the substitute (mnist_a) made them" in md
    assert "- `advae`" not in md


def test_oag_ablation_rows_name_the_t_n_they_ran_at() -> None:
    def rows(variant: str, set_: dict, t_n: int) -> list[dict]:
        return [{"variant": variant, "defense": "oag", "set": set_, "network_steps": t_n, "attack": a,
                 "threat_model": tm, "accuracy": 0.5, "n": 10}
                for a, tm in (("clean", "none"), ("bim_target", "oblivious"))]

    md = "\n".join(_ablation_lines({"rows": rows("oag_ti10", {"image_steps": 10}, 300)
                                    + rows("oag_calibrated_tn", {"network_steps": None}, 187)}))
    assert "| oag_ti10 (T_N 300) | 10 |" in md
    assert "| oag_calibrated_tn (T_N 187, *calibrated*) | 10 |" in md
    cal = {"images": 4, "noisy_accuracy": 0.5, "candidates": [],
           "spec": {"network_steps": 300, "calibration": {"noise_sigma": 0.25, "tolerance": 0.01}},
           "chosen": {"eps_g": 0.5, "beta": 3e-5, "init_std": 0.01, "network_steps": 187}}
    assert "pinned T_N 300, not at the calibrated 187" in "\n".join(_calibration_lines(cal))
