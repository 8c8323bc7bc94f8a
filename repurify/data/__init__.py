"""Dataset registry: name -> loader module returning uint8 NCHW tensors for train and test."""

from repurify.data.base import Split, list_datasets, load_raw, load_split, prepare, source_module
from repurify.data.store import DatasetFile, load_dataset, save_dataset

__all__ = [
    "DatasetFile",
    "Split",
    "list_datasets",
    "load_dataset",
    "load_raw",
    "load_split",
    "prepare",
    "save_dataset",
    "source_module",
]
