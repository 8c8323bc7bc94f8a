"""Stage fetch_data: load the profile's dataset and write it as uint8 tensors + manifest."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from importlib import import_module
from pathlib import Path

from repurify import paths
from repurify.data import load_split, save_dataset, source_module
from repurify.io import sha256_file, write_json
from repurify.params import Params
from repurify.tracking import stage_run
from stages._cli import run_stage


def fetch_data(params: Params, args: argparse.Namespace) -> None:
    p, profile = params.active.data, params.profile
    out = Path(paths.path(paths.DATASET, profile))
    with stage_run("fetch_data", params) as run:
        ds = save_dataset(out, load_split(p), p.name)
        s = ds.split
        manifest = {
            "profile": profile,
            "dataset": p.name,
            "source": getattr(import_module(source_module(p.name)), "ORIGIN", str(p.raw_root)),
            "classes": list(s.classes),
            "image_shape": list(ds.image_shape),
            "n_train": len(s.y_train),
            "n_test": len(s.y_test),
            "train_class_counts": dict(sorted(Counter(s.y_train.tolist()).items())),
            "test_class_counts": dict(sorted(Counter(s.y_test.tolist()).items())),
            "mean": list(ds.mean),
            "std": list(ds.std),
            "sha256": {out.name: sha256_file(out)},
        }
        write_json(paths.path(paths.MANIFEST, profile), manifest)
        run.log_metrics({"n_train": manifest["n_train"], "n_test": manifest["n_test"]})
        print(f"fetch_data: {p.name} -> {out} ({manifest['n_train']} train, "
              f"{manifest['n_test']} test, shape {ds.image_shape})")


if __name__ == "__main__":
    sys.exit(run_stage("fetch_data", __doc__, fetch_data))
