"""CIFAR-10 in torchvision's on-disk format (``<root>/cifar-10-batches-py/``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

from torchvision import datasets as tvd

from repurify.data.base import Split
from repurify.data.sources._files import ensure, hwc_to_nchw, labels

if TYPE_CHECKING:
    from repurify.data.params import DataParams

_FILES = ["cifar-10-batches-py/" + f for f in (
    *(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")]


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


def load(p: DataParams) -> Split:
    root = p.raw_root
    ensure("cifar10", root, _FILES, p.download,
            lambda: tvd.CIFAR10(str(root), train=True, download=True))
    tr, te = (_CIFAR10(str(root), train=t, download=False) for t in (True, False))
    return Split(hwc_to_nchw(tr.data), labels(tr.targets), hwc_to_nchw(te.data),
                 labels(te.targets), tuple(tr.classes))
