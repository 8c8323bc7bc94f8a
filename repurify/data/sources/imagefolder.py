"""Flowers-17 / ImageNet subsets laid out as ``<root>/<train_dir|test_dir>/<class>/*.jpg``.

An ImageFolder lists its images class by class, so the first n of them would cover a few classes
only. Both splits are therefore stored class-interleaved (seeded), and every ``[:n]`` subset taken
downstream (evaluation, adaptive images, calibration, ablations, transfer) is stratified.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torchvision import datasets as tvd
from torchvision.transforms import functional as TF

from repurify.data.base import Split
from repurify.data.sources._files import labels
from repurify.errors import DataUnavailableError

if TYPE_CHECKING:
    from repurify.data.params import DataParams


def _read_folder(folder: tvd.ImageFolder, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image: shorter side resized to ``size``, centre crop, RGB uint8."""
    out = torch.empty(len(folder.samples), 3, size, size, dtype=torch.uint8)
    for i, (path, _) in enumerate(folder.samples):
        img = folder.loader(path)
        img = TF.center_crop(TF.resize(img, size, antialias=True), [size, size])
        out[i] = TF.pil_to_tensor(img.convert("RGB"))
    return out, labels(folder.targets)


def class_interleaved(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """An order in which each prefix of k x C images holds k of each of the C classes (while a
    class lasts): each class shuffled (``seed``), then dealt round-robin."""
    gen = torch.Generator().manual_seed(seed)
    key = torch.empty(len(y), dtype=torch.int64)
    classes = y.unique().tolist()
    for c, cls in enumerate(classes):
        members = torch.nonzero(y == cls).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        key[members] = torch.arange(len(members)) * len(classes) + c
    return torch.argsort(key)


def _image_folder(folder: Path) -> tvd.ImageFolder:
    try:
        return tvd.ImageFolder(str(folder))
    except FileNotFoundError as exc:  # no class folders, or a class folder without images
        raise DataUnavailableError(
            f"imagefolder: {folder} holds no usable images ({exc}); it needs one sub-folder per "
            f"class with image files in it"
        ) from None


def load(p: DataParams) -> Split:
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
    (x_tr, y_tr), (x_te, y_te) = _read_folder(tr, p.image_size), _read_folder(te, p.image_size)
    o_tr, o_te = class_interleaved(y_tr), class_interleaved(y_te)
    return Split(x_tr[o_tr], y_tr[o_tr], x_te[o_te], y_te[o_te], tuple(tr.classes))
