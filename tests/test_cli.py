"""Bad input fails before any work: exit 2, a message naming the key or file, no output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.repo_copy import ROOT, stage_env


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def _run(workdir: Path, stage: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=workdir,
                          capture_output=True, text=True, env=stage_env(ROOT), timeout=1800)


def _edit(workdir: Path, old: str, new: str) -> None:
    f = workdir / "params.yaml"
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new, 1))


def _edit_profile(workdir: Path, profile: str, old: str, new: str) -> None:
    """Replace the first ``old`` inside ``profiles.<profile>``."""
    f = workdir / "params.yaml"
    head, sep, tail = f.read_text().partition(f"\n  {profile}:\n")
    assert sep and old in tail
    f.write_text(head + sep + tail.replace(old, new, 1))


def _outputs(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                  if p.is_file() and p.name != "params.yaml" and "logs" not in p.parts)


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("    data:\n      name: digits\n      image_size: 16",
         "    data:\n      name: digits\n      image_sise: 16", "profiles.digits.data.image_sise"),
        ("pgd: {kind: pgd, eps: 0.1,", "pgd: {kind: pgd, eps: -0.1,", "profiles.digits.attacks.pgd.eps"),
        ("      image_size: 16\n", "      image_size: sixteen\n", "profiles.digits.data.image_size"),
        ("      name: digits\n", "      name: emnist\n", "unknown dataset 'emnist'"),
        ("        arch: small_cnn\n", "        arch: resnet1000\n", "unknown architecture"),
    ],
)
def test_invalid_params_fail_before_work(workdir: Path, old: str, new: str, needle: str) -> None:
    _edit(workdir, old, new)
    res = _run(workdir, "fetch_data")
    assert res.returncode == 2
    assert needle in res.stderr
    assert _outputs(workdir) == []


def test_unknown_profile(workdir: Path) -> None:
    res = _run(workdir, "fetch_data", "--profile", "cifar100")
    assert res.returncode == 2
    assert "profile 'cifar100' is not defined" in res.stderr


def test_missing_dataset_offline_names_the_path(workdir: Path) -> None:
    _edit(workdir, "      name: cifar10\n      image_size: 32\n      channels: 3\n",
          "      name: cifar10\n      image_size: 32\n      channels: 3\n      download: false\n")
    res = _run(workdir, "fetch_data", "--profile", "cifar10")
    assert res.returncode == 2
    assert "data/raw/cifar10/cifar-10-batches-py/data_batch_1" in res.stderr
    assert "data.root" in res.stderr
    assert _outputs(workdir) == []


def test_train_without_dataset_names_the_stage_to_run(workdir: Path) -> None:
    res = _run(workdir, "train_classifier", "--profile", "smoke")
    assert res.returncode == 2
    assert "data/smoke/dataset.pt: not found; run the `fetch_data` stage first" in res.stderr
    assert _outputs(workdir) == []


def test_corrupt_dataset_is_refused(workdir: Path) -> None:
    bad = workdir / "data" / "smoke" / "dataset.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    res = _run(workdir, "train_classifier", "--profile", "smoke")
    assert res.returncode == 2
    assert "data/smoke/dataset.pt: cannot be loaded" in res.stderr
    assert "rerun the `fetch_data` stage" in res.stderr
    assert _outputs(workdir) == ["data/smoke/dataset.pt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_an_error(workdir: Path) -> None:
    res = _run(workdir, "fetch_data", "--profile", "smoke")
    assert res.returncode == 0, res.stderr
    res = _run(workdir, "train_classifier", "--profile", "smoke", "--device", "cuda")
    assert res.returncode == 2
    assert "no CUDA device" in res.stderr
    assert not (workdir / "data" / "smoke" / "models").exists()


def test_evaluate_without_attacks_names_the_stage(workdir: Path) -> None:
    assert _run(workdir, "fetch_data", "--profile", "smoke").returncode == 0
    assert _run(workdir, "train_classifier", "--profile", "smoke").returncode == 0
    res = _run(workdir, "evaluate", "--profile", "smoke", "--defense", "jpeg")
    assert res.returncode == 2
    assert "data/smoke/attacks/target.pt: not found; run the `generate_attacks` stage" in res.stderr
    assert not (workdir / "metrics" / "smoke" / "eval").exists()
    res = _run(workdir, "evaluate", "--profile", "smoke", "--defense", "pixeldefend")
    assert res.returncode == 2
    assert "--defense pixeldefend: not a defense of profile 'smoke'; choose from ['none'" in res.stderr


def test_train_defense_checks_every_input_before_training(workdir: Path) -> None:
    assert _run(workdir, "fetch_data", "--profile", "smoke").returncode == 0
    res = _run(workdir, "train_defense", "--profile", "smoke", "--defense", "advae")
    assert res.returncode == 2
    assert ("data/smoke/models/target.pt: not found; run the `train_classifier` stage first"
            in res.stderr)
    assert not (workdir / "data" / "smoke" / "defenses").exists()
    assert _run(workdir, "train_classifier", "--profile", "smoke").returncode == 0
    _edit_profile(workdir, "smoke", "        arch: small_cnn\n", "        arch: mnist_x\n")
    res = _run(workdir, "train_defense", "--profile", "smoke", "--defense", "hgd")
    assert res.returncode == 2
    assert "built with arch='small_cnn' but the params ask for 'mnist_x'" in res.stderr
    assert not (workdir / "data" / "smoke" / "defenses").exists()


def test_evaluate_refuses_a_defense_trained_with_other_params(workdir: Path) -> None:
    for stage, extra in (("fetch_data", ()), ("train_classifier", ()), ("generate_attacks", ()),
                         ("train_defense", ("--defense", "hgd"))):
        res = _run(workdir, stage, "--profile", "smoke", *extra)
        assert res.returncode == 0, res.stderr
    _edit_profile(workdir, "smoke", "        loss: lgd ", "        loss: cgd ")
    res = _run(workdir, "evaluate", "--profile", "smoke", "--defense", "hgd")
    assert res.returncode == 2
    assert "data/smoke/defenses/hgd.pt does not match params defenses.hgd" in res.stderr
    assert "loss: trained with 'lgd', params say 'cgd'" in res.stderr
    assert "rerun the `train_defense_hgd` stage" in res.stderr
    # OAG's calibration plays the checkpoint's part
    res = _run(workdir, "evaluate", "--profile", "smoke", "--defense", "oag")
    assert res.returncode == 2
    assert ("metrics/smoke/oag_calibration.json: not found; run the `calibrate_oag` stage first"
            in res.stderr)
    assert _run(workdir, "calibrate", "--profile", "smoke", "--defense", "oag").returncode == 0
    _edit_profile(workdir, "smoke", "        filters: 4\n", "        filters: 6\n")
    res = _run(workdir, "evaluate", "--profile", "smoke", "--defense", "oag")
    assert res.returncode == 2
    assert "filters: calibrated with 4, params say 6" in res.stderr
    assert not (workdir / "metrics" / "smoke" / "eval").exists()


def test_missing_vgg19_weights_fail_before_training(workdir: Path, tmp_path: Path) -> None:
    for stage in ("fetch_data", "train_classifier"):
        assert _run(workdir, stage, "--profile", "smoke").returncode == 0
    _edit_profile(workdir, "smoke", "perceptual: target_features", "perceptual: vgg19")  # egcfl's
    home = tmp_path / "torch_home"
    env = {**stage_env(ROOT), "TORCH_HOME": str(home), "HTTPS_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9"}  # offline: the download is refused at once
    res = subprocess.run([sys.executable, "-m", "stages.train_defense", "--profile", "smoke",
                          "--defense", "egcfl"], cwd=workdir, capture_output=True, text=True, env=env,
                         timeout=1800)
    assert res.returncode == 2, res.stderr
    assert f"VGG-19 ImageNet weights not found at {home / 'hub/checkpoints/vgg19-dcbb9e9d.pth'}" in res.stderr
    assert "perceptual: target_features" in res.stderr
    assert not (workdir / "data" / "smoke" / "defenses").exists()


def test_stages_pin_the_cpu_kernels_and_threads_whatever_the_engine_sets() -> None:
    """Stage processes get AVX2 kernels and $REPURIFY_THREADS threads, not Snakemake's count."""
    probe = ("import stages, torch; "
             "print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("REPURIFY_THREADS", None)
    for threads, expect in ((None, "AVX2 2"), ("1", "AVX2 1")):
        if threads:
            env["REPURIFY_THREADS"] = threads
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
        assert " ".join(out) == expect


def test_ctrl_c_ends_with_a_short_message_and_a_failed_run(workdir: Path) -> None:
    """SIGINT mid-stage: exit 130, one line instead of a traceback, the MLflow run FAILED."""
    import signal
    import time

    from mlflow.tracking import MlflowClient

    assert _run(workdir, "fetch_data", "--profile", "digits").returncode == 0
    log, uri = workdir / "logs" / "train.log", f"sqlite:///{workdir / 'own.db'}"
    env = {**stage_env(ROOT), "MLFLOW_TRACKING_URI": uri}
    # a suite started in the background (`make test &`) passes SIGINT on ignored: restore it
    proc = subprocess.Popen([sys.executable, "-m", "stages.train_classifier", "--profile", "digits",
                             "--log", str(log)], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not log.exists() and proc.poll() is None:  # the stage's own handling starts with its log
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "train_classifier: interrupted" in err
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.stage = 'train_classifier'")
    assert [r.info.status for r in runs] == ["FAILED"]
