"""Dataset loaders: scikit-learn digits, torchvision MNIST/CIFAR-10/SVHN, ImageFolder.

Each returns raw uint8 NCHW tensors; :func:`repurify.data.base.prepare` applies
the profile's size and subset. When files are absent and cannot be downloaded,
the loader raises :class:`DataUnavailableError` naming the exact paths to fill.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision import datasets as tvd
from torchvision.transforms import functional as TF

from repurify.data.base import Split, register
from repurify.errors import DataUnavailableError

if TYPE_CHECKING:
    from repurify.data.params import DataParams


@register("digits")
def load_digits(p: DataParams) -> Split:
    """scikit-learn's bundled 8x8 digits (1797 images), with a fixed stratified split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    idx_train, idx_test = train_test_split(
        np.arange(len(bunch.target)), test_size=p.test_fraction, random_state=0,
        stratify=bunch.target,
    )
    x, y = torch.from_numpy(images), torch.from_numpy(bunch.target.astype(np.int64))
    return Split(x[idx_train], y[idx_train], x[idx_test], y[idx_test],
                 tuple(str(i) for i in range(10)))


def _unavailable(name: str, root: Path, expected: list[str], reason: str) -> DataUnavailableError:
    files = "\n".join(f"  {root / f}" for f in expected)
    return DataUnavailableError(
        f"{name}: dataset files not found under {root} and the download failed ({reason}).\n"
        f"Put the files at:\n{files}\n"
        f"(or set profiles.<profile>.data.root to the folder that holds them)."
    )


def _ensure(name: str, root: Path, expected: list[str], download: bool, fetch) -> None:
    """Make sure ``expected`` files exist under ``root``, downloading once if allowed."""
    if all((root / f).exists() for f in expected):
        return
    if not download:
        raise _unavailable(name, root, expected, "download disabled by data.download: false")
    try:
        fetch()
    except Exception as exc:  # network errors surface as URLError, OSError, RuntimeError ...
        raise _unavailable(name, root, expected, f"{type(exc).__name__}: {exc}") from None
    if not all((root / f).exists() for f in expected):
        raise _unavailable(name, root, expected, "download finished but files are missing")


class _CIFAR10(tvd.CIFAR10):
    """torchvision CIFAR-10 whose presence check does not insist on upstream MD5s.

    The manifest written by ``fetch_data`` records the SHA-256 of what was used;
    a corrupt pickle fails loudly while parsing.
    """

    def _check_integrity(self) -> bool:
        base = Path(self.root) / self.base_folder
        return all((base / f).is_file() for f, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        # torchvision's _load_meta MD5-checks batches.meta even when _check_integrity does not.
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        with open(path, "rb") as fh:
            self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _SVHN(tvd.SVHN):
    """torchvision SVHN (same presence check as :class:`_CIFAR10`)."""

    def _check_integrity(self) -> bool:
        return (Path(self.root) / self.filename).is_file()


_MNIST_FILES = ["MNIST/raw/" + f for f in (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
_CIFAR_FILES = ["cifar-10-batches-py/" + f for f in (
    *(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")]
_SVHN_FILES = ["train_32x32.mat", "test_32x32.mat"]


def _labels(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.int64)


def _hwc_to_nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


@register("mnist")
def load_mnist(p: DataParams) -> Split:
    root = p.raw_root
    _ensure("mnist", root, _MNIST_FILES, p.download,
            lambda: tvd.MNIST(str(root), train=True, download=True))
    tr, te = (tvd.MNIST(str(root), train=t, download=False) for t in (True, False))
    return Split(tr.data[:, None], _labels(tr.targets), te.data[:, None], _labels(te.targets),
                 tuple(str(i) for i in range(10)))


@register("cifar10")
def load_cifar10(p: DataParams) -> Split:
    root = p.raw_root
    _ensure("cifar10", root, _CIFAR_FILES, p.download,
            lambda: tvd.CIFAR10(str(root), train=True, download=True))
    tr, te = (_CIFAR10(str(root), train=t, download=False) for t in (True, False))
    return Split(_hwc_to_nchw(tr.data), _labels(tr.targets), _hwc_to_nchw(te.data),
                 _labels(te.targets), tuple(tr.classes))


@register("svhn")
def load_svhn(p: DataParams) -> Split:
    root = p.raw_root

    def fetch() -> None:
        for split in ("train", "test"):
            tvd.SVHN(str(root), split=split, download=True)

    _ensure("svhn", root, _SVHN_FILES, p.download, fetch)
    tr, te = (_SVHN(str(root), split=s, download=False) for s in ("train", "test"))
    return Split(torch.from_numpy(tr.data), _labels(tr.labels), torch.from_numpy(te.data),
                 _labels(te.labels), tuple(str(i) for i in range(10)))


def _read_folder(folder: tvd.ImageFolder, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image: shorter side resized to ``size``, centre crop, RGB uint8."""
    out = torch.empty(len(folder.samples), 3, size, size, dtype=torch.uint8)
    for i, (path, _) in enumerate(folder.samples):
        img = folder.loader(path)
        img = TF.center_crop(TF.resize(img, size, antialias=True), [size, size])
        out[i] = TF.pil_to_tensor(img.convert("RGB"))
    return out, _labels(folder.targets)


def _image_folder(folder: Path) -> tvd.ImageFolder:
    try:
        return tvd.ImageFolder(str(folder))
    except FileNotFoundError as exc:  # no class folders, or a class folder without images
        raise DataUnavailableError(
            f"imagefolder: {folder} holds no usable images ({exc}); it needs one sub-folder per "
            f"class with image files in it"
        ) from None


@register("imagefolder")
def load_imagefolder(p: DataParams) -> Split:
    """Flowers-17 / ImageNet subsets laid out as ``<root>/<train_dir|test_dir>/<class>/*.jpg``."""
    root = p.raw_root
    dirs = [root / p.train_dir, root / p.test_dir]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise DataUnavailableError(
            f"imagefolder: {', '.join(map(str, missing))} not found; this dataset cannot be "
            f"downloaded automatically. Arrange it as {root}/{p.train_dir}/<class>/<image> and "
            f"{root}/{p.test_dir}/<class>/<image> (same class folders in both), or point "
            f"profiles.<profile>.data.root at it."
        )
    tr, te = (_image_folder(d) for d in dirs)
    if tr.classes != te.classes:
        raise DataUnavailableError(
            f"imagefolder: class folders differ between {dirs[0]} and {dirs[1]}: "
            f"{sorted(set(tr.classes) ^ set(te.classes))}"
        )
    x_tr, y_tr = _read_folder(tr, p.image_size)
    x_te, y_te = _read_folder(te, p.image_size)
    return Split(x_tr, y_tr, x_te, y_te, tuple(tr.classes))
