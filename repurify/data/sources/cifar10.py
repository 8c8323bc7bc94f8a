"""CIFAR-10 in torchvision's on-disk format (``<root>/cifar-10-batches-py/``).

Its batches are Python pickles, and unpickling runs whatever code a file names. So no batch is
unpickled by ``pickle.load``: each file's MD5 is checked against the official one (torchvision's
list), and every file, official or not, goes through :class:`SafeUnpickler`, which admits only
NumPy arrays, lists, dicts, strings, bytes and numbers. A file naming anything else is refused.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchvision import datasets as tvd

from repurify.data.base import Split
from repurify.data.sources._files import ensure, labels
from repurify.errors import DataUnavailableError

if TYPE_CHECKING:
    from repurify.data.params import DataParams

BASE = "cifar-10-batches-py"
OFFICIAL_MD5 = dict([*tvd.CIFAR10.train_list, *tvd.CIFAR10.test_list,
                     (tvd.CIFAR10.meta["filename"], tvd.CIFAR10.meta["md5"])])
TRAIN = [f for f, _ in tvd.CIFAR10.train_list]
_FILES = [f"{BASE}/{f}" for f in OFFICIAL_MD5]
# what a NumPy array's pickle names (its module moved to numpy._core in NumPy 2), and what
# protocol 2 rebuilds bytes with
_ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
            for n in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype"),
                                                    ("_codecs", "encode")}


class SafeUnpickler(pickle.Unpickler):
    """Unpickle data only: a global outside NumPy's array reconstruction is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"names {module}.{name}, which a dataset file never needs")


def read_batch(path: Path) -> dict[str, Any]:
    """One batch file, checked; a file that is not the official one says so, and is still only
    read as data."""
    data = path.read_bytes()
    official = OFFICIAL_MD5.get(path.name) == hashlib.md5(data).hexdigest()
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:
        what = "the official file" if official else "not the official file (MD5 differs)"
        raise DataUnavailableError(
            f"{path}: refused ({what}; {exc}). Replace it with the official CIFAR-10 python batch "
            "from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz") from None


def _images(entries: list[dict[str, Any]]) -> tuple[Any, Any]:
    x = np.concatenate([np.asarray(e["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for e in entries])
    return x, labels([y for e in entries for y in e["labels"]])


def load(p: DataParams) -> Split:
    root = p.raw_root
    ensure("cifar10", root, _FILES, p.download,
           lambda: tvd.CIFAR10(str(root), train=True, download=True))
    base = Path(root) / BASE
    x_tr, y_tr = _images([read_batch(base / f) for f in TRAIN])
    x_te, y_te = _images([read_batch(base / "test_batch")])
    classes = tuple(read_batch(base / "batches.meta")["label_names"])
    return Split(torch.from_numpy(x_tr), y_tr, torch.from_numpy(x_te), y_te, classes)
