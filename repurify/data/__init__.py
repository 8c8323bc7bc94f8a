"""Dataset registry: name -> loader returning uint8 NCHW tensors for train and test."""

from repurify.data import sources as _sources  # noqa: F401  (registers the loaders)
from repurify.data.base import DATASETS, Split, load_split, prepare
from repurify.data.store import DatasetFile, load_dataset, save_dataset

__all__ = [
    "DATASETS",
    "DatasetFile",
    "Split",
    "load_dataset",
    "load_split",
    "prepare",
    "save_dataset",
]
