"""One DAG, two engines: dvc.yaml is fresh and DVC and Snakemake see the same stages."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from repurify.params import load_params
from workflow.dag import active_profile, main, render_dvc, stages, stale
from workflow.imports import closure

ROOT = Path(__file__).resolve().parent.parent
PROFILE, PROF = active_profile()  # params.yaml's profile, which `dvc` interpolates
STAGES = stages(PROF)
FULL = stages(load_params(ROOT / "params.yaml", profile="digits_full").active)  # transfer, ablation


def test_committed_dvc_yaml_and_slurm_profile_are_fresh() -> None:
    assert (ROOT / "dvc.yaml").read_text() == render_dvc(PROF), "run `python -m workflow.dag`"
    assert main(["--check"]) == 0


def _dvc_view() -> dict[str, dict]:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    view = {}
    with Repo(str(ROOT)) as repo:
        for st in repo.index.stages:
            view[st.name] = {
                "cmd": st.cmd,
                "deps": sorted(d.def_path for d in st.deps if not isinstance(d, ParamsDependency)),
                "outs": sorted(o.def_path for o in st.outs),
            }
    return view


def _snakemake_view() -> dict[str, dict]:
    out = subprocess.run(["snakemake", "-n", "-F", "-p", "--config", f"profile={PROFILE}"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    view: dict[str, dict] = {}
    for block in re.split(r"\n(?=\[[^\n]*\]\nrule )", out):
        m = re.search(r"^rule (\w+):$", block, re.M)
        if not m or m.group(1) == "all":
            continue

        def field(name: str, text: str = block) -> list[str]:
            f = re.search(rf"^\s+{name}: (.*)$", text, re.M)
            return sorted(f.group(1).split(", ")) if f else []

        cmd = re.search(r"^Shell command: (.*)$", block, re.M)
        view[m.group(1)] = {"cmd": cmd.group(1) if cmd else "", "deps": field("input"),
                            "outs": field("output")}
    return view


@pytest.fixture(scope="module")
def views() -> tuple[dict, dict]:
    return _dvc_view(), _snakemake_view()


def test_engines_run_the_same_dag(views: tuple[dict, dict]) -> None:
    dvc, smk = views
    assert list(dvc) == [s.name for s in STAGES]
    assert dvc == smk


def test_each_stage_depends_on_its_own_source(views: tuple[dict, dict]) -> None:
    for view in views:
        for st in STAGES:
            assert st.script in view[st.name]["deps"]
            assert "repurify/params.py" in view[st.name]["deps"]


def test_every_profile_keeps_its_own_outputs() -> None:
    for st in STAGES:
        for path in (*st.outs, *st.out_dirs, *st.uncached, *st.metrics):
            assert "{profile}" in path, path


def test_dvc_params_cover_the_stage_sections() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["fetch_data"]["params"] == ["profiles.${profile}.data"]
    assert "profiles.${profile}.classifiers" in stages["train_classifier"]["params"]
    assert "seed" in stages["train_classifier"]["params"]


def test_slurm_profile_requests_gpus_for_gpu_stages() -> None:
    cfg = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    assert cfg["executor"] == "slurm"
    gpu_stages = {s.name for s in STAGES if s.resources.gpu}
    assert gpu_stages, "training stages must ask for a GPU"
    requested = {name for name, res in cfg.get("set-resources", {}).items() if res.get("gpu")}
    assert requested == gpu_stages


def test_snakemake_lint_passes() -> None:
    res = subprocess.run(["snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_slurm_profile_resolves_from_repo_root() -> None:
    env = {**os.environ, "SBATCH_ACCOUNT": "proj42", "SBATCH_PARTITION": "gpu"}
    res = subprocess.run(
        ["snakemake", "--cores", "all", "--profile", "slurm", "-n", "-F", "-p"],
        cwd=ROOT, capture_output=True, text=True, env=env,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    text = res.stdout + res.stderr
    assert "rule train_classifier:" in text
    assert re.search(r"resources: .*gpu=1", text)
    assert "slurm_account=proj42" in text and "slurm_partition=gpu" in text


def test_editing_oag_reruns_only_what_runs_oag() -> None:
    """A stage's code is its import closure plus the defenses it runs: an edit of oag.py reruns
    OAG's own stages, the experiments with OAG variants (digits_full's) and, downstream, the report."""
    assert stale(FULL, files=("repurify/defenses/oag.py",)) == [
        "calibrate_oag", "evaluate_oag", "check_oag", "transfer", "ablation", "report"]
    assert stale(STAGES, files=("repurify/defenses/oag.py",)) == [
        "calibrate_oag", "evaluate_oag", "check_oag", "report"]
    assert stale(STAGES, files=("repurify/defenses/jpeg.py",)) == ["evaluate_jpeg", "check_jpeg", "report"]
    assert "repurify/defenses/oag.py" not in next(s for s in STAGES if s.name == "evaluate_hgd").code_files()


def test_a_dataset_loader_is_code_of_the_fetch_that_runs_it_only() -> None:
    """Adding or editing another dataset's loader reruns nothing of this profile."""
    assert stale(STAGES, files=("repurify/data/sources/mnist5k.py",)) == []
    assert stale(STAGES, files=("repurify/data/sources/digits.py",))[0] == "fetch_data"
    assert [s.name for s in STAGES if "repurify/data/sources/digits.py" in s.code_files()] == ["fetch_data"]


def test_one_hgd_param_reruns_only_hgd_and_what_uses_it() -> None:
    assert stale(FULL, params=("defenses.hgd.widths",)) == [
        "train_defense_hgd", "evaluate_hgd", "check_hgd", "transfer", "report"]
    assert stale(STAGES, params=("defenses.hgd.widths",)) == [
        "train_defense_hgd", "evaluate_hgd", "check_hgd", "report"]
    assert stale(STAGES, params=("defenses.jpeg.quality",)) == ["evaluate_jpeg", "check_jpeg", "report"]


def test_a_grid_entry_that_runs_its_slot_unchanged_waits_for_the_slots_training() -> None:
    # AdvAE Table 3's X/X is Table 1's auto-encoder; HGD Table 4's IncV3-guided LGD is Table 2's
    for profile, slot in (("mnist", "advae"), ("imagenet_hgd", "hgd")):
        table = {st.name: st for st in stages(load_params(ROOT / "params.yaml", profile=profile).active)}
        assert f"data/{{profile}}/defenses/{slot}.pt" in table["transfer"].deps
    # digits_full's grid trains every variant itself (model X, the ensemble, the substitute's guide)
    assert not [d for d in next(st for st in FULL if st.name == "transfer").deps if "/defenses/" in d]


def test_import_closure_follows_lazy_imports_and_parent_packages() -> None:
    code = closure("stages/calibrate.py", "repurify/defenses/oag.py")
    assert "repurify/calibration.py" in code  # imported inside OAG's calibrator
    assert "repurify/defenses/__init__.py" in code and "repurify/__init__.py" in code
    assert "repurify/defenses/hgd.py" not in closure("stages/fetch_data.py")


PROFILES = list(yaml.safe_load((ROOT / "params.yaml").read_text())["profiles"])


@pytest.mark.parametrize("profile", PROFILES)
def test_both_engines_plan_every_profile(profile: str, tmp_path: Path) -> None:
    """Each engine plans the profile's whole stage table: Snakemake's dry run, DVC's resolved
    stages and DAG (the paper-scale profiles, which no run here reaches, must at least plan)."""
    _, prof = active_profile(profile)
    names = {s.name for s in stages(prof)}
    smk = subprocess.run(["snakemake", "-n", "-F", "--config", f"profile={profile}"], cwd=ROOT,
                         capture_output=True, text=True)
    assert smk.returncode == 0, smk.stderr[-2000:]
    assert set(re.findall(r"^rule (\w+):$", smk.stdout, re.M)) - {"all"} == names
    # DVC interpolates params.yaml's `profile`: a copy of the tree that names this one
    for part in ("repurify", "stages", "workflow"):
        (tmp_path / part).symlink_to(ROOT / part)
    raw = (ROOT / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(re.sub(r"(?m)^profile: \S+", f"profile: {profile}", raw))
    (tmp_path / "dvc.yaml").write_text(render_dvc(prof))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    dvc = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert dvc.returncode == 0, dvc.stderr[-2000:]
    assert set(dvc.stdout.split()) == names
    graph = subprocess.run(["dvc", "dag"], cwd=tmp_path, capture_output=True, text=True)
    assert graph.returncode == 0, graph.stderr[-2000:]  # one DAG: no cycle, no output made twice
