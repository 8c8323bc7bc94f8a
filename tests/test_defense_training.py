"""The shared training loop (plateau decay, early stop, best restore) and defense checkpoints."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from repurify.defenses import build_purifier, save_defense
from repurify.defenses.fitting import Repeated, disk_tensor, fit, split_validation
from repurify.defenses.hgd import HgdSpec, build_denoiser
from repurify.errors import CheckpointError
from repurify.schema import DefenseTraining


def _cfg(**kw) -> DefenseTraining:
    return DefenseTraining.model_validate({"epochs": 30, "batch_size": 16, "lr": 0.05,
                                           "lr_decay": 0.5, "plateau_patience": 1, **kw})


def _problem() -> tuple[nn.Linear, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.01 * torch.randn(64, 1, generator=gen)
    torch.manual_seed(0)
    return nn.Linear(3, 1), (x[:48], y[:48]), (x[48:], y[48:])


def _mse(model: nn.Module):
    return lambda batch: ((model(batch[0]) - batch[1]) ** 2).mean()


def test_fit_learns_and_restores_the_best_epoch() -> None:
    model, train, val = _problem()
    hist = fit(model, train, val, _mse(model), _mse(model), _cfg(), device=torch.device("cpu"),
               gen=torch.Generator().manual_seed(0), desc="test")
    assert hist.val_loss[-1] < hist.val_loss[0] / 10
    assert hist.best_val_loss == min(hist.val_loss)
    with torch.no_grad():
        restored = _mse(model)(val).item()
    assert restored == pytest.approx(hist.best_val_loss, rel=1e-5)


def test_learning_rate_decays_on_plateau_and_training_stops_early() -> None:
    model, train, val = _problem()
    frozen = lambda batch: model(batch[0]).sum() * 0 + 1.0  # noqa: E731  (a loss that never improves)
    hist = fit(model, train, val, _mse(model), frozen,
               _cfg(plateau_patience=1, early_stop_patience=4, min_lr=0.01),
               device=torch.device("cpu"), gen=torch.Generator().manual_seed(0), desc="test")
    assert hist.stopped_early and len(hist.val_loss) == 5  # best at epoch 0, then 4 without gain
    assert hist.lr[0] == 0.05 and hist.lr[-1] < 0.05
    assert min(hist.lr) >= 0.01
    assert hist.best_epoch == 0


def test_split_validation_holds_out_a_fraction() -> None:
    train, val = split_validation(100, 0.1, torch.Generator().manual_seed(0))
    assert len(val) == 10 and len(train) == 90
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100))


def _hgd_spec(**kw) -> HgdSpec:
    return HgdSpec.model_validate({"kind": "hgd", "widths": [8, 16], "sources": ["target"],
                                   "eps_max": 0.1, "training": {"epochs": 1, "batch_size": 8,
                                                                "lr_decay": 0.1,
                                                                "plateau_patience": 1}, **kw})


def test_checkpoint_round_trip_and_mismatches(tmp_path: Path) -> None:
    spec = _hgd_spec()
    net = build_denoiser(spec, 1).eval()
    path = tmp_path / "hgd.pt"
    save_defense(path, net, spec, {"image_shape": [1, 16, 16]})
    loaded = build_purifier(spec, path, "hgd", (1, 16, 16))
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(loaded(x), net(x))

    with pytest.raises(CheckpointError, match=r"loss: trained with 'lgd', params say 'fgd'") as exc:
        build_purifier(_hgd_spec(loss="fgd"), path, "hgd", (1, 16, 16))
    assert "train_defense_hgd" in str(exc.value)
    with pytest.raises(CheckpointError, match=r"training\.epochs"):
        build_purifier(_hgd_spec(training={"epochs": 2, "batch_size": 8, "lr_decay": 0.1,
                                           "plateau_patience": 1}), path, "hgd", (1, 16, 16))
    with pytest.raises(CheckpointError, match="image_shape"):
        build_purifier(spec, path, "hgd", (3, 16, 16))


def test_corrupt_or_missing_checkpoint_names_the_file_and_the_stage(tmp_path: Path) -> None:
    spec = _hgd_spec()
    path = tmp_path / "hgd.pt"
    with pytest.raises(CheckpointError, match="not found; run the `train_defense_hgd` stage"):
        build_purifier(spec, path, "hgd", (1, 16, 16))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        build_purifier(spec, path, "hgd", (1, 16, 16))
    torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError, match="not a repurify defense checkpoint"):
        build_purifier(spec, path, "hgd", (1, 16, 16))


def test_a_disk_tensor_holds_its_values_and_leaves_no_file(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    t = disk_tensor((4, 1, 2, 2))
    assert t.dtype == torch.float32 and t.shape == (4, 1, 2, 2) and int(t.abs().sum()) == 0
    t[1:3] = torch.ones(2, 1, 2, 2)
    assert t.sum() == 8 and torch.equal(t[torch.tensor([2, 0])].sum((1, 2, 3)), torch.tensor([4.0, 0.0]))
    assert list(tmp_path.iterdir()) == []  # unlinked from the start: a killed stage leaves nothing


def test_repeated_rows_are_the_repeated_tensor() -> None:
    x = torch.arange(12.0).view(3, 1, 2, 2)
    r = Repeated(x, 4)
    idx = torch.tensor([11, 0, 5, 3])
    assert len(r) == 12 and torch.equal(r[idx], x.repeat(4, 1, 1, 1)[idx])
