"""The benchmark harness runs on tiny sizes (timings are reported, never asserted)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.__main__ import main
from benchmarks.pipeline import groups, measure, ran, set_param, stage_name
from benchmarks.timing import median_seconds
from repurify import paths
from repurify.data import load_split, save_dataset
from repurify.io import write_json
from repurify.models.classifier import build_classifier, save_classifier
from repurify.params import load_params
from tests.repo_copy import ROOT


def _smoke_inputs(root: Path) -> None:
    """The smoke profile's dataset and an (untrained) target checkpoint, where the stages put them."""
    prof = load_params(ROOT / "params.yaml", profile="smoke").active
    ds = save_dataset(root / paths.path(paths.DATASET, "smoke"), load_split(prof.data), "digits")
    arch = prof.classifiers.target.arch
    model = build_classifier(arch, tuple(ds.image_shape), ds.num_classes, ds.mean, ds.std)
    save_classifier(root / paths.path(paths.CLASSIFIER, "smoke", role="target"), model,
                    {"arch": arch, "image_shape": list(ds.image_shape), "num_classes": ds.num_classes,
                     "mean": list(ds.mean), "std": list(ds.std)})


def test_benchmark_command_writes_every_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["--profile", "smoke", "--batch", "3", "--network-steps", "1", "--attack-batch", "16",
                 "--out", "results.json"]) == 2  # no trained target yet: a clear error
    _smoke_inputs(tmp_path)
    assert main(["--profile", "smoke", "--batch", "3", "--network-steps", "1", "--attack-batch", "16",
                 "--out", "results.json"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    oag = results["oag_batching"]
    assert oag["batch"] == 3 and oag["image_shape"] == [1, 16, 16]
    assert oag["speedup"] > 0 and oag["goal_speedup"] == 20
    assert oag["max_abs_difference"] < 1e-4  # the batch computes what the loop computes
    eot = results["eot_stacking"]
    assert eot["images"] == 10 and eot["samples"] == 20 and eot["speedup"] > 0
    assert "draws stacked / one draw a call" in (tmp_path / "results.md").read_text()
    overhead = results["attack_overhead"]
    assert overhead["batch"] == 16 and overhead["steps"] == 5 and overhead["ratio"] > 0
    ref = results["pgd_vs_reference"]
    assert ref["time_ratio"] > 0 and 0 <= ref["robust_accuracy_repurify"] <= ref["clean_accuracy"]
    assert results["machine"]["cpu_cores"] >= 1
    text = (tmp_path / "results.md").read_text()
    assert "OAG batched / one-at-a-time" in text and "repurify / ART" in text
    assert results["pipeline"] == {"skipped": "pass --pipeline or --records"}
    assert "not run: pass --install" in text
    oag_edit = results["edit_reruns"]["repurify/defenses/oag.py"]
    assert {"calibrate_oag", "evaluate_oag", "check_oag", "report"} <= set(oag_edit)
    assert "evaluate_jpeg" not in oag_edit and "stages an edit of `repurify/defenses/oag.py`" in text


def test_measure_reports_time_and_peak_memory_of_the_process_tree(tmp_path: Path) -> None:
    grow = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'x = bytearray(300 << 20)'])"
    out = measure([sys.executable, "-c", grow], tmp_path, dict(os.environ))
    assert out["peak_rss_mib"] >= 300 and out["seconds"] > 0  # a grandchild's peak counts
    with pytest.raises(RuntimeError, match="exit 3"):
        measure([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path, dict(os.environ))


def test_rerun_parsing_and_param_edits(tmp_path: Path) -> None:
    assert ran("Running stage 'a':\n> x\nStage 'b' didn't change\nRunning stage 'c':") == ["a", "c"]
    params = tmp_path / "params.yaml"
    params.write_text("profile: digits\nprofiles:\n  digits:\n    defenses:\n"
                      "      jpeg: {kind: jpeg, quality: 75}\n")
    assert set_param(params, "profiles.digits.defenses.jpeg.quality", 50) == 75
    assert yaml.safe_load(params.read_text())["profiles"]["digits"]["defenses"]["jpeg"]["quality"] == 50
    assert stage_name({"stage": "evaluate", "defense": "hgd"}) == "evaluate_hgd"
    assert stage_name({"stage": "calibrate_oag", "defense": "oag"}) == "calibrate_oag"


def test_a_dry_run_log_gives_the_jobs_it_lists() -> None:
    from benchmarks.pipeline import dry_run_jobs

    assert dry_run_jobs("Nothing to be done (all requested files are present and up to date).") == 0
    stats = "Job stats:\njob      count\n-----  -----\nall        1\nreport     1\ntotal      2\n"
    assert dry_run_jobs(stats) == 2


def test_groups_sum_the_stages_of_each_kind() -> None:
    stages = {"fetch_data": {"seconds": 10.0}, "evaluate_none": {"seconds": 30.0},
              "evaluate_hgd": {"seconds": 50.0}, "train_defense_hgd": {"seconds": 10.0}}
    rows = groups(stages)
    assert rows[0] == {"kind": "evaluate", "stages": 2, "seconds": 80.0, "share": 0.8}
    assert [r["kind"] for r in rows[1:]] == ["fetch_data", "train_defense"]
    # a kind's compute bound is summed only where every one of its stages timed one
    stages["evaluate_none"]["bound_seconds"] = 3.0
    assert "bound_seconds" not in groups(stages)[0]
    stages["evaluate_hgd"]["bound_seconds"] = 5.0
    assert groups(stages)[0]["bound_seconds"] == 8.0


def test_the_bound_is_shown_beside_the_time_it_bounds() -> None:
    from benchmarks.__main__ import _bound

    assert _bound({"seconds": 30.0}) == ""
    assert _bound({"seconds": 30.0, "bound_seconds": 7.5}) == "; compute bound 7.5 s, 4.0x"
    assert _bound({"seconds": 3.0, "bound_seconds": 0.0}) == "; no network pass counted"


def test_median_seconds_alternates_the_functions_after_a_warm_up_round() -> None:
    calls: list[str] = []
    times = median_seconds(lambda: calls.append("a"), lambda: calls.append("b"), repeats=3)
    assert calls == ["a", "b"] * 4 and len(times) == 2 and all(t >= 0 for t in times)


def test_a_from_scratch_total_is_never_summed_over_stages_that_did_not_run() -> None:
    from benchmarks.__main__ import _pipeline_lines

    stages = {"fetch_data": {"seconds": 60.0, "peak_rss_mib": 900.0}}
    p = {"source": "the stages' MLflow records", "stages": stages, "groups": groups(stages),
         "seconds_from_scratch": 60.0, "goal_seconds_from_scratch": 900, "peak_rss_mib_max": 900.0,
         "goal_peak_rss_mib": 4096, "seconds_noop": 1.5, "goal_seconds_noop": 2.0,
         "seconds_noop_first": 4.0, "noop_reran": [],
         "change": {"key": "k", "from": 1, "to": 2, "reran": ["report"], "seconds": 30.0}}
    assert "| 1.0 min |" in _pipeline_lines(p)[0]
    partial = _pipeline_lines({**p, "unrecorded": ["evaluate_none"]})[0]
    assert "not measured: evaluate_none never ran in this checkout (the 1 that did: 1.0 min)" in partial


def test_determinism_probe_trains_both_classifiers_reproducibly(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.determinism import KNOBS, _train

    _smoke_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    first, again = _train("smoke"), _train("smoke")
    assert set(first) == set(paths.ROLES) and first == again  # same machine, same bytes
    assert all(len(r["md5"]) == 32 and r["train_loss"] > 0 for r in first.values())
    assert KNOBS["committed pins"] == {}
    assert all(isinstance(v, str) for env in KNOBS.values() for v in env.values())


def test_schedule_runs_stages_in_order_and_records_them(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage table without DVC or Snakemake: what ran, its exit code, what could not run."""
    from benchmarks.schedule import schedule

    shutil.copy(ROOT / "params.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    status = schedule("smoke", "cpu", tmp_path / "out", jobs=2, budget_s=float("inf"),
                      only=("fetch_data", "train_classifier"))
    assert [status[s]["rc"] for s in ("fetch_data", "train_classifier")] == [0, 0]
    assert status["train_classifier"]["started_s"] >= status["fetch_data"]["seconds"]  # after its input
    saved = json.loads((tmp_path / "out" / "schedule.json").read_text())
    assert saved["stages"] == json.loads(json.dumps(status))
    assert (tmp_path / paths.path(paths.CLASSIFIER, "smoke", role="target")).is_file()
    spent = schedule("smoke", "cpu", tmp_path / "late", jobs=1, budget_s=0, only=("fetch_data",))
    assert spent == {"fetch_data": {"rc": None, "not_run": "budget spent"}}
    hidden = tmp_path / "no_mlflow"  # a GPU image without MLflow: the record goes to a file
    hidden.mkdir()
    (hidden / "mlflow.py").write_text("raise ImportError('not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", f"{hidden}{os.pathsep}{ROOT}")
    assert schedule("smoke", "cpu", tmp_path / "bare", jobs=1, budget_s=float("inf"),
                    only=("fetch_data",))["fetch_data"]["rc"] == 0
    record = json.loads((tmp_path / "bare" / "records" / "fetch_data.json").read_text())
    assert record["status"] == "FINISHED" and record["metrics"]["stage.seconds"] > 0


def test_throughput_times_pgd_through_hgd_and_a_resnet() -> None:
    import torch

    from benchmarks.throughput import throughput

    t = throughput(torch.device("cpu"), batch=2, steps=2, repeats=1)
    assert t["classifier"] == "resnet18_cifar" and t["image_shape"] == [3, 32, 32]
    assert t["images_per_second_pgd"] > 0 and t["images_per_second_forward_backward"] > 0


def test_render_adds_the_gpu_section_from_the_committed_run(tmp_path: Path) -> None:
    from benchmarks.__main__ import GPU, gpu_lines

    section = "\n".join(gpu_lines(GPU))
    assert section.startswith("## GPU") and "NVIDIA" in section and "OAG, AutoAttack rand" in section
    assert gpu_lines(tmp_path / "none.json")[2].startswith("No GPU run recorded")


def test_a_partial_runs_claims_table_has_the_papers_numbers_beside_its_rows(tmp_path: Path) -> None:
    """Known answer: mnist5k's undefended slot alone, clean 97.5% and FGSM 22% on 1000 images,
    against AdvAE Table 1's 99.6 and 41.1."""
    from benchmarks.claims_table import rows

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    fgsm = {"attack": "fgsm", "threat_model": "oblivious", "source": "target", "accuracy": 0.22,
            "n": 1000, "se": 0.0131}
    write_json(tmp_path / "metrics/mnist5k/eval/none.json",
               {"clean": {"accuracy": 0.975, "n": 1000, "se": 0.0049}, "clean_accuracy": 0.975,
                "results": [fgsm]})
    got = {r["id"]: r for r in rows("mnist5k", tmp_path)}
    assert set(got) == {"advae-t1-01", "advae-t1-06"}  # the other attacks have no row here
    assert got["advae-t1-06"]["claimed"] == pytest.approx(0.411)
    assert got["advae-t1-06"]["difference"] == pytest.approx(0.22 - 0.411)
    assert (got["advae-t1-01"]["n"], got["advae-t1-01"]["se"]) == (1000, 0.0049)


def test_a_pooled_claim_in_the_claims_table_is_its_parts_mean_with_a_paired_error(
        tmp_path: Path) -> None:
    """Known answer: HGD's BlackTestSet at 4/255 pools FGSM and IFGSM4 in equal parts on the same
    4 images, scores [1, 1, 1, 0] and [1, 1, 0, 0]: 62.5% on 4 images, the SE of the per-image means
    [1, 1, 0.5, 0]; without per-image scores, the parts' mean SE (an upper bound)."""
    from benchmarks.claims_table import rows
    from repurify.stats import standard_error

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    part = {"threat_model": "blackbox", "source": "transfer", "n": 4}
    fgsm = {**part, "attack": "hgd_fgsm4", "accuracy": 0.75, "se": 0.2165, "correct": [1, 1, 1, 0]}
    ifgsm = {**part, "attack": "hgd_ifgsm4_4", "accuracy": 0.5, "se": 0.25, "correct": [1, 1, 0, 0]}
    path = tmp_path / "metrics/imagenet_hgd/eval/none.json"
    for results, se in (([fgsm, ifgsm], standard_error([1, 1, 0.5, 0])),
                        ([{k: v for k, v in r.items() if k != "correct"} for r in (fgsm, ifgsm)],
                         (0.2165 + 0.25) / 2)):
        write_json(path, {"clean": {"accuracy": 0.75, "n": 4, "se": 0.2165}, "clean_accuracy": 0.75,
                          "results": results})
        got = {r["id"]: r for r in rows("imagenet_hgd", tmp_path)}["hgd-t2-19"]
        assert got["attack"] == "fgsm + bim"
        assert (got["reproduced"], got["n"]) == (pytest.approx(0.625), 4)
        assert got["se"] == pytest.approx(se)
        assert got["difference"] == pytest.approx(0.625 - 0.612)
