"""Flowers-17 / ImageNet subsets laid out as ``<root>/<train_dir|test_dir>/<class>/*.jpg``."""

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
    x_tr, y_tr = _read_folder(tr, p.image_size)
    x_te, y_te = _read_folder(te, p.image_size)
    return Split(x_tr, y_tr, x_te, y_te, tuple(tr.classes))
