"""The ``data`` params: which dataset to load and at what size."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from repurify.data.base import list_datasets
from repurify.schema import Strict


class DataParams(Strict):
    """Which dataset to load and how to normalise it to uint8 NCHW tensors."""

    name: str
    root: str | None = None  # raw files; default data/raw/<name>
    image_size: int = Field(gt=0)
    channels: Literal[1, 3]
    download: bool = True
    test_fraction: float = Field(default=0.25, gt=0, lt=1)  # digits and mnist5k (one pool, split here)
    train_limit: int | None = Field(default=None, gt=0)
    test_limit: int | None = Field(default=None, gt=0)
    train_dir: str = "train"  # ImageFolder layouts only
    test_dir: str = "val"
    # an ImageFolder's dataset as the papers' claims name it (flowers17, imagenet); claims are
    # compared only on their own dataset
    paper_dataset: Literal["cifar10", "svhn", "mnist", "imagenet", "flowers17"] | None = None

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in list_datasets():
            raise ValueError(f"unknown dataset {v!r}; choose one of {list_datasets()}")
        return v

    @property
    def raw_root(self) -> Path:
        return Path(self.root) if self.root else Path("data/raw") / self.name
