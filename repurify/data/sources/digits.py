"""scikit-learn's bundled 8x8 digits (1797 images): the offline default."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from repurify.data.base import Split, stratified_split

if TYPE_CHECKING:
    from repurify.data.params import DataParams


ORIGIN = "sklearn.datasets.load_digits"  # bundled: no raw files


def load(p: DataParams) -> Split:
    """The 17 gray levels (0..16) scaled to 0..255, with a fixed stratified split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    return stratified_split(torch.from_numpy(images), torch.from_numpy(bunch.target.astype(np.int64)),
                            p.test_fraction, tuple(str(i) for i in range(10)))
