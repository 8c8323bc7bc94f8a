"""End to end: the smoke profile through `dvc repro` and `snakemake --cores 2` in scratch copies."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from repurify.params import load_params, prepared
from tests.repo_copy import ROOT, copy_repo

pytestmark = pytest.mark.slow

SMOKE = load_params(ROOT / "params.yaml", profile="smoke").active
DEFENSES = tuple(SMOKE.defenses)  # the papers' nine and the example plugin's two
PLUGINS = ("blur", "noise")  # examples/repurify-blur: gaussian_blur, random_noise
RANDOMIZED = ("noise", "oag")
TRAINED = tuple(prepared(SMOKE, "train"))
AUTOGRAD = ("egcfl", "gcln")  # also attacked white-box through autograd's gradients (their papers)
NO_PAPERNOT = ("oag",)  # evaluation.limits: it synthesizes every query anew
STAGES = ["fetch_data", "train_classifier", "generate_attacks", *(["train_defense"] * len(TRAINED)),
          "calibrate", *(["evaluate"] * len(DEFENSES)), *(["check"] * len(DEFENSES)),
          "transfer", "ablation", "report"]
PLOTS = ("eps_sweep", "iterations", "gen_k", "qs_sweep", "oag_steps", "noise_energy")
OUTPUTS = ("data/smoke/dataset.pt", "data/smoke/manifest.json", "data/smoke/models/target.pt",
           "data/smoke/models/substitute.pt", "metrics/smoke/classifier.json",
           "data/smoke/attacks/target.pt", "data/smoke/attacks/substitute.pt",
           "metrics/smoke/attacks.json", "reports/smoke/report.md", "reports/smoke/summary.json",
           *(f"metrics/smoke/eval/{d}.json" for d in DEFENSES),
           *(f"data/smoke/defenses/{d}.pt" for d in TRAINED),
           *(f"metrics/smoke/defenses/{d}.json" for d in TRAINED),
           "data/smoke/transfer/zoo_D.pt", "data/smoke/transfer/0_advae.pt",
           "data/smoke/transfer/1_hgd.pt", "metrics/smoke/transfer.json",
           "data/smoke/ablation/egcfl_no_feedback.pt", "data/smoke/ablation/gcln_q0.2.pt",
           "metrics/smoke/ablation.json", "metrics/smoke/oag_calibration.json",
           *(f"metrics/smoke/checks/{d}.json" for d in DEFENSES),
           *(f"reports/smoke/figures/grid_{d}.png" for d in DEFENSES),
           *(f"reports/smoke/figures/{p}.png" for p in PLOTS),
           *(f"reports/smoke/plots/{p}.csv" for p in PLOTS))


def _sh(cwd: Path, *cmd: str, env: dict[str, str] | None = None) -> str:
    # a guard against hangs, not a speed test: an hour for the smoke pipeline on a slow machine
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=3600,
                         env={**os.environ, **(env or {})})
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout + res.stderr


def _check_outputs(repo: Path) -> dict:
    for rel in OUTPUTS:
        assert (repo / rel).is_file(), rel
    manifest = json.loads((repo / "data/smoke/manifest.json").read_text())
    assert (manifest["n_train"], manifest["n_test"], manifest["image_shape"]) == (240, 80, [1, 16, 16])
    metrics = json.loads((repo / "metrics/smoke/classifier.json").read_text())
    assert set(metrics) == {"target", "substitute"}
    for role in metrics.values():
        assert 0.0 <= role["clean_accuracy"] <= 1.0
        assert role["n_test"] == 80
    for d in DEFENSES:
        ev = json.loads((repo / f"metrics/smoke/eval/{d}.json").read_text())
        assert ev["defense"] == d and 0 <= ev["clean_accuracy"] <= 1
        threats = {(r["threat_model"], r.get("source")) for r in ev["results"]}
        assert threats == {("oblivious", "target"), ("blackbox", "transfer"), ("whitebox", None),
                           *((("blackbox", "papernot"),) if d not in NO_PAPERNOT else ()),
                           *((("whitebox", "autograd"),) if d in AUTOGRAD else ())}
        for r in ev["results"]:
            assert {"attack", "threat_model", "eps", "norm", "accuracy", "n"} <= set(r)
            assert 0 <= r["accuracy"] <= 1 and r["n"] > 0
        metrics[f"eval/{d}"] = ev
    for d in TRAINED:
        trained = json.loads((repo / f"metrics/smoke/defenses/{d}.json").read_text())
        assert trained["kind"] == d and trained["epochs_run"] == 2
        assert trained["best_val_loss"] == min(trained["history"]["val_loss"])
        metrics[f"defenses/{d}"] = trained
    transfer = json.loads((repo / "metrics/smoke/transfer.json").read_text())
    assert {r["column"] for r in transfer["rows"]} == {"{target,substitute}/D", "substitute/target",
                                                       "target/substitute"}
    # the unchanged entry is the slot's own HGD, not a retrained copy
    reused = {r.get("slot") for r in transfer["rows"] if r["column"] == "target/substitute"}
    assert reused == {"train_defense_hgd"}
    metrics["transfer"] = transfer
    ablation = json.loads((repo / "metrics/smoke/ablation.json").read_text())
    assert list(dict.fromkeys(r["variant"] for r in ablation["rows"])) == [
        "egcfl_gen1", "egcfl_gen2", "egcfl_no_feedback", "gcln_q0.2", "oag_ti2", "oag_autoencoder"]
    assert {r["threat_model"] for r in ablation["rows"] if r["variant"] == "oag_autoencoder"} == {
        "none", "oblivious"}
    noise = ablation["noise_energy"]
    assert len(noise["before"]) == len(noise["after"]) == 20 and noise["mean_before"] > 0
    metrics["ablation"] = ablation
    calibration = json.loads((repo / "metrics/smoke/oag_calibration.json").read_text())
    assert 1 <= calibration["chosen"]["network_steps"] <= 4
    assert [len(c["curve"]) for c in calibration["candidates"]] == [4]
    oag = {r["attack"]: r for r in metrics["eval/oag"]["results"] if r["threat_model"] == "whitebox"}
    assert set(oag) == {"fgsm", "pgd", "autoattack", "adaptive pgd-4x2",
                        "adaptive autoattack (apgd-ce, apgd-dlr)"}
    assert {r["n"] for r in oag.values()} == {4}
    assert {r["draws"] for r in metrics["eval/oag"]["results"]} == {5}  # multi-draw scoring
    for d in DEFENSES:
        worst = metrics[f"eval/{d}"]["worst_case"]
        assert worst["n"] == (4 if d == "oag" else 16) and 0 <= worst["accuracy"] <= 1
        per_attack = [r["accuracy"] for r in metrics[f"eval/{d}"]["results"] if r["threat_model"]
                      == "whitebox" and r.get("eps") is not None and r["n"] == worst["n"]]
        assert worst["accuracy"] <= min(per_attack) + 1e-12  # the worst case is a per-image minimum
        conv = metrics[f"eval/{d}"]["convergence"]
        assert [p["steps"] for p in conv["steps"]] == [2, 4]
        assert [p["restarts"] for p in conv["restarts"]] == [1, 2]
    metrics["oag_calibration"] = calibration
    for d in DEFENSES:
        probes = json.loads((repo / f"metrics/smoke/checks/{d}.json").read_text())
        assert [p["eps"] for p in probes["eps_sweep"]] == [0.1, 1.0]
        assert all(len(p["iterations"]) == probes["steps"] + 1 for p in probes["eps_sweep"])
        assert probes["randomness"]["detected"] == (d in RANDOMIZED) == probes["randomness"]["declared"]
        assert probes["n"] == metrics[f"eval/{d}"]["worst_case"]["n"]  # one image set
        assert (probes["eot_probe"] is not None) == (d in RANDOMIZED)
        metrics[f"checks/{d}"] = probes
    report = (repo / "reports/smoke/report.md").read_text()
    assert "## Model transfer" in report and "## Ablations" in report
    assert "## OAG calibration" in report
    assert all(f"## Defense `{d}`" in report for d in DEFENSES)
    assert "## Gradient-masking checks" in report and "## Figures" in report
    assert all(f"### {p}: " in report for p in ("egcfl", "gcln", "hgd", "oag", "advae"))
    assert "| setting differs |" in report and "differs: dataset digits vs cifar10" in report
    summary = json.loads((repo / "reports/smoke/summary.json").read_text())
    assert set(summary["masking"]) == set(DEFENSES)
    verdicts = {m["verdict"] for m in summary["masking"].values()}
    assert verdicts <= {"suspected", "inconclusive", "not detected"}
    headline = report[report.index("## Worst case and verdict"):report.index("## Convergence")]
    for d in PLUGINS:  # the plugin's purifiers, prepared and judged like the papers'
        row = next(line for line in headline.splitlines() if line.startswith(f"| {d} |"))
        assert f"| **{summary['masking'][d]['verdict']}" in row
    assert "## Worst case and verdict" in report and "## Convergence of the adaptive attack" in report
    assert report.index("## Worst case and verdict") < report.index("## Classifiers")
    metrics["masking"] = summary["masking"]
    assert not list(repo.rglob("*.tmp")), "half-written temporary files left behind"
    return metrics


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("repurify")
    return client.search_runs([exp.experiment_id]) if exp else []


def _kind(runs: list, kind: str) -> list:
    """The pipeline, stage or row runs (tag ``repurify.kind``)."""
    return [r for r in runs if r.data.tags.get("repurify.kind") == kind]


# one torch thread per stage, so that `snakemake --cores 2` runs two stages at once (the bytes
# depend on the thread count: both engines run with the same)
ONE_THREAD = {"REPURIFY_THREADS": "1"}


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    repo = copy_repo(tmp_path_factory.mktemp("dvc"), profile="smoke")
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    out = _sh(repo, "dvc", "repro", env={"MLFLOW_TRACKING_URI": uri, **ONE_THREAD})
    return repo, _check_outputs(repo), out


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    repo = copy_repo(tmp_path_factory.mktemp("snakemake"))
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    _sh(repo, "snakemake", "--cores", "2", "--config", "profile=smoke",
        env={"MLFLOW_TRACKING_URI": uri, **ONE_THREAD})
    return repo, _check_outputs(repo)


def test_dvc_repro_runs_smoke(dvc_run: tuple[Path, dict, str]) -> None:
    repo, _, out = dvc_run
    assert "Running stage 'fetch_data'" in out and "Running stage 'train_classifier'" in out
    again = _sh(repo, "dvc", "repro",
                env={"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'm2.db'}", **ONE_THREAD})
    assert "Running stage" not in again
    shown = json.loads(_sh(repo, "dvc", "metrics", "show", "--json"))
    assert "metrics/smoke/classifier.json" in json.dumps(shown)
    headline = json.loads((repo / "metrics/smoke/headline.json").read_text())
    assert sorted(headline) == sorted(DEFENSES) and "metrics/smoke/headline.json" in json.dumps(shown)
    assert all({"clean", "worst_case", "paper_protocol", "verdict"} <= set(h) for h in headline.values())
    _sh(repo, "dvc", "plots", "show", "-o", "plots_html")
    html = (repo / "plots_html/index.html").read_text()
    assert all(f"reports/smoke/plots/{p}.csv" in html or p in html for p in PLOTS)
    assert all(f"grid_{d}" in html for d in DEFENSES)
    runs = _runs(f"sqlite:///{repo / 'mlflow.db'}")
    (pipeline,) = _kind(runs, "pipeline")  # one parent run for the whole `dvc repro`
    parents = _kind(runs, "stage")
    assert {r.data.tags["mlflow.parentRunId"] for r in parents} == {pipeline.info.run_id}
    assert sorted(r.data.tags["stage"] for r in parents) == sorted(STAGES)
    assert all(r.data.metrics["stage.peak_rss_mib"] > 100 and r.data.metrics["stage.seconds"] > 1
               for r in parents)  # every stage records what it cost
    assert {(r.data.tags["engine"], r.data.tags["profile"]) for r in runs} == {("dvc", "smoke")}
    tagged = [(r.data.tags["stage"], r.data.tags["defense"]) for r in parents if "defense" in r.data.tags]
    assert sorted(tagged) == sorted([*(("evaluate", d) for d in DEFENSES), *(("check", d) for d in DEFENSES),
                                     *(("train_defense", d) for d in TRAINED), ("calibrate", "oag")])
    children = _kind(runs, "row")
    rows = sum(len(json.loads((repo / f"metrics/smoke/eval/{d}.json").read_text())["results"])
               for d in DEFENSES)
    assert len(children) == rows
    assert {"defense", "attack", "threat_model"} <= set(children[0].data.tags)


def test_snakemake_runs_smoke(snakemake_run: tuple[Path, dict]) -> None:
    repo, _ = snakemake_run
    all_runs = _runs(f"sqlite:///{repo / 'mlflow.db'}")
    assert len(_kind(all_runs, "pipeline")) == 1
    runs = _kind(all_runs, "stage")
    assert sorted(r.data.tags["stage"] for r in runs) == sorted(STAGES)
    assert {r.data.tags["engine"] for r in runs} == {"snakemake"}
    assert (repo / "logs/smoke/train_classifier.log").read_text().count("clean test accuracy") == 2
    spans = [(r.info.start_time, r.info.end_time) for r in runs]  # two cores, one thread a stage:
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])  # overlap


def test_engines_agree_and_runs_are_deterministic(dvc_run: tuple[Path, dict, str],
                                                  snakemake_run: tuple[Path, dict]) -> None:
    """Same params and seed -> same metrics, whichever engine ran them."""
    assert dvc_run[1] == snakemake_run[1]
    for d in TRAINED:  # byte-identical checkpoints
        assert ((dvc_run[0] / f"data/smoke/defenses/{d}.pt").read_bytes()
                == (snakemake_run[0] / f"data/smoke/defenses/{d}.pt").read_bytes())
    dvc_manifest = json.loads((dvc_run[0] / "data/smoke/manifest.json").read_text())
    smk_manifest = json.loads((snakemake_run[0] / "data/smoke/manifest.json").read_text())
    assert dvc_manifest == smk_manifest
