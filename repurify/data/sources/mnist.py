"""MNIST in torchvision's on-disk format (``<root>/MNIST/raw/*-ubyte``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchvision import datasets as tvd

from repurify.data.base import Split
from repurify.data.sources._files import ensure, labels

if TYPE_CHECKING:
    from repurify.data.params import DataParams

_FILES = ["MNIST/raw/" + f for f in (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]


def load(p: DataParams) -> Split:
    root = p.raw_root
    ensure("mnist", root, _FILES, p.download, lambda: tvd.MNIST(str(root), train=True, download=True))
    tr, te = (tvd.MNIST(str(root), train=t, download=False) for t in (True, False))
    return Split(tr.data[:, None], labels(tr.targets), te.data[:, None], labels(te.targets),
                 tuple(str(i) for i in range(10)))
