"""The scale estimates: counts derived by hand, the dataset file size, the resources they set."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.scale import (
    GIB,
    NODE_GIB,
    Estimate,
    Scale,
    Term,
    classifier_flops,
    cpu_check,
    oag_step_flops,
    rate,
    write_requests,
)
from repurify.data.base import Split
from repurify.data.store import save_dataset
from repurify.params import load_params
from workflow.dag import REQUESTS, slurm_resources, stages

ROOT = Path(__file__).resolve().parent.parent


def _profile(name: str):
    return load_params(ROOT / "params.yaml", name).active


def _stage(prof, name: str):
    return next(st for st in stages(prof) if st.name == name)


def test_generate_attacks_counts_every_step_of_every_cached_attack_on_smoke() -> None:
    prof = _profile("smoke")
    terms = Scale(prof).terms(_stage(prof, "generate_attacks"))
    # by hand: FGSM 1, BIM 5, three PGD 5 x 1 restart, MI-FGSM 5, C&W 10 steps x 2 searches = 46
    # gradient passes on each of 40 images; AutoAttack is white-box only
    for role, arch in (("target", "small_cnn"), ("substitute", "mnist_a")):
        mine = [t for t in terms if t.what.endswith(f"on {role}")]
        assert sum(t.images for t in mine) == 46 * 40
        assert {t.flops for t in mine} == {2 * classifier_flops(arch, (1, 16, 16), 10)}


def test_hgd_training_counts_its_attacks_and_copies_on_smoke() -> None:
    prof = _profile("smoke")
    attacks, training = Scale(prof).terms(_stage(prof, "train_defense_hgd"))
    # train_limit 120, one source: FGSM and IFGSM-2 on it (1 + 2 passes an image), two copies
    # of 120 images for 2 epochs
    assert attacks.images == 120 * 3
    assert training.images == 2 * 2 * 120


def test_hgd_copies_on_imagenet_go_to_scratch_disk_and_the_stage_fits_a_node() -> None:
    prof = _profile("imagenet_hgd")
    s, st = Scale(prof), _stage(prof, "train_defense_hgd")
    spec = prof.defenses["hgd"]
    assert spec.sources == ["target"] and spec.ifgsm_steps == [2, 4, 8]
    copies = 1 + 3  # a lone source: its FGSM is the ensemble's; then IFGSM-2, -4, -8
    images = min(s.n_train, spec.training.train_limit or s.n_train)
    assert s.scratch_bytes(st) == copies * images * 4 * 3 * 299 * 299
    assert s.host_bytes(st) < NODE_GIB * GIB


def test_classifier_training_is_epochs_times_the_training_split_on_digits() -> None:
    prof = _profile("digits")
    s = Scale(prof)
    assert (s.n_train, s.n_test, s.classes) == (1347, 450, 10)  # 1797 digits, 25% (rounded up) test
    assert [t.images for t in s.terms(_stage(prof, "train_classifier"))] == [30 * 1347, 30 * 1347]


def test_oag_network_step_flops_follow_the_energy_network() -> None:
    spec = _profile("digits").defenses["oag"]  # k 5, K 16, T_I 20, one channel
    # per pixel and k^2 C K: each Langevin step a forward and an input gradient of the convolution
    # (2 + 2), the network update a forward and a weight gradient on I_z and on I_s (2 x 4)
    per = spec.kernel ** 2 * 1 * spec.filters
    assert oag_step_flops(spec, 1) == (4 * spec.image_steps + 8) * per


def test_dataset_bytes_match_a_written_dataset_file(tmp_path: Path) -> None:
    prof = _profile("smoke")
    s = Scale(prof)
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (s.n_train, *s.shape), generator=gen, dtype=torch.uint8),
                  torch.randint(0, 10, (s.n_train,), generator=gen),
                  torch.randint(0, 256, (s.n_test, *s.shape), generator=gen, dtype=torch.uint8),
                  torch.randint(0, 10, (s.n_test,), generator=gen), tuple("0123456789"))
    save_dataset(tmp_path / "dataset.pt", split, "digits")
    size = (tmp_path / "dataset.pt").stat().st_size
    assert 0 <= size - s.dataset_bytes() < 8192  # the archive's own records


def test_requests_are_twice_the_time_and_one_and_a_half_the_memory() -> None:
    hour = Term("one hour", images=1, flops=3600 * rate(), batch=10 ** 9)
    assert Estimate((hour,), 10 * GIB).request() == (15 * 1024, 120)
    assert Estimate((), GIB).request() == (4 * 1024, None)  # floors; no GPU work keeps its time


def test_digits_stages_no_longer_ask_for_16_gb_and_12_hours() -> None:
    for st in stages(_profile("digits")):
        asked = slurm_resources(st, "digits")
        assert 4096 <= asked["mem_mb"] < 16000, st.name
        assert 10 <= asked["runtime"] < 720, st.name


def test_committed_requests_are_the_estimates(tmp_path: Path) -> None:
    """workflow/requests.yaml is what `python -m benchmarks.scale --write` writes now."""
    write_requests(tmp_path / "requests.yaml")
    assert (tmp_path / "requests.yaml").read_text() == REQUESTS.read_text(), (
        "run `python -m benchmarks.scale --write`")


def test_a_profile_not_estimated_keeps_the_generous_defaults() -> None:
    st = next(s for s in stages(_profile("digits")) if s.name == "evaluate_none")
    assert slurm_resources(st, "not_estimated") == {"mem_mb": 16000, "runtime": 720}


def test_counting_matches_the_measured_cpu_run() -> None:
    checked = cpu_check()
    counted, measured = map(sum, zip(*checked.values(), strict=True))
    assert 0.5 < counted / measured < 2
    # OAG is randomized: no early stopping, every draw counted; its stages must match closely
    for name in ("evaluate_oag", "check_oag"):
        assert 0.67 < checked[name][0] / checked[name][1] < 1.5, name
