"""SVHN in torchvision's on-disk format (``<root>/{train,test}_32x32.mat``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torchvision import datasets as tvd

from repurify.data.base import Split
from repurify.data.sources._files import ensure, labels

if TYPE_CHECKING:
    from repurify.data.params import DataParams

_FILES = ["train_32x32.mat", "test_32x32.mat"]


class _SVHN(tvd.SVHN):
    """torchvision SVHN whose presence check does not insist on upstream MD5s (as cifar10's)."""

    def _check_integrity(self) -> bool:
        return (Path(self.root) / self.filename).is_file()


def load(p: DataParams) -> Split:
    root = p.raw_root

    def fetch() -> None:
        for split in ("train", "test"):
            tvd.SVHN(str(root), split=split, download=True)

    ensure("svhn", root, _FILES, p.download, fetch)
    tr, te = (_SVHN(str(root), split=s, download=False) for s in ("train", "test"))
    return Split(torch.from_numpy(tr.data), labels(tr.labels), torch.from_numpy(te.data),
                 labels(te.labels), tuple(str(i) for i in range(10)))
