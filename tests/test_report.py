"""Report sections: gradient-masking verdicts, claimed vs reproduced, figures."""

from __future__ import annotations

from repurify.report import _convergence_lines, render_markdown


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
