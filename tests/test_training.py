"""Classifier training: learns, is deterministic given the seed, augments within bounds."""

from __future__ import annotations

import pytest
import torch

from repurify.data import load_split
from repurify.models import build_classifier
from repurify.params import ClassifierParams, DataParams
from repurify.runtime import resolve_device, seed_everything
from repurify.training import accuracy, augment, train_classifier

CFG = ClassifierParams(arch="small_cnn", epochs=3, batch_size=32, optimizer="adam", lr=0.003,
                       schedule="cosine", augment="crop")


@pytest.fixture(scope="module")
def digits():
    return load_split(DataParams(name="digits", image_size=16, channels=1, train_limit=300,
                                 test_limit=150))


def _train(split, seed: int):
    gen = seed_everything(seed)
    model = build_classifier("small_cnn", (1, 16, 16), 10, (0.3,), (0.3,))
    hist = train_classifier(model, split.x_train, split.y_train, CFG, torch.device("cpu"), gen)
    return model, hist


def test_training_learns_and_is_deterministic(digits) -> None:
    torch.set_num_threads(1)
    m1, h1 = _train(digits, seed=0)
    m2, h2 = _train(digits, seed=0)
    m3, _ = _train(digits, seed=1)
    assert h1.loss[-1] < h1.loss[0]
    assert accuracy(m1, digits.x_test, digits.y_test, torch.device("cpu")) > 0.5  # chance: 0.1
    assert h1.loss == h2.loss
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in
               zip(m1.state_dict().values(), m3.state_dict().values(), strict=True))


def test_augment_crops_within_padding_and_flips() -> None:
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = augment(x, gen, flip=False)
    assert out.shape == x.shape
    # a crop of the reflect-padded image is a translation by at most size/8 = 1 px
    shifts = {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    for i in range(2):
        inner = out[i, 0, 1:-1, 1:-1]
        assert any(torch.equal(inner, x[i, 0, 1 + dy:7 + dy, 1 + dx:7 + dx]) for dy, dx in shifts)
    flipped = augment(x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(1), flip=True)
    assert flipped.shape == (64, 1, 8, 8)


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        from repurify.errors import ParamsError

        with pytest.raises(ParamsError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.gpu
def test_training_on_cuda(digits) -> None:
    gen = seed_everything(0)
    model = build_classifier("small_cnn", (1, 16, 16), 10, (0.3,), (0.3,))
    train_classifier(model, digits.x_train, digits.y_train, CFG, torch.device("cuda"), gen)
    assert next(model.parameters()).is_cuda
