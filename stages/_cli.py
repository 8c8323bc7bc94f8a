"""Shared stage CLI: parse ``--profile/--params/--device/--log``, validate, report errors plainly."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import torch

from repurify import paths
from repurify.data import load_dataset
from repurify.defenses import DefendedModel, build_purifier
from repurify.errors import CheckpointError, RepurifyError
from repurify.evaluation import EvalData, load_eval_data
from repurify.io import load_torch
from repurify.models import load_classifier
from repurify.models.classifier import Classifier
from repurify.params import Params, load_params
from repurify.runtime import seed_everything


class _Tee:
    """Write to the terminal stream and a log file; keeps the stream's TTY-ness for tqdm."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _tee_to(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def run_stage(name: str, doc: str, body: Callable[[Params, argparse.Namespace], None],
              argv: list[str] | None = None,
              add_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Validate params, then call ``body(params, args)``; errors exit 2 with a message.

    ``args.device`` is the ``--device`` flag or else the ``device`` key of params.
    """
    ap = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=doc)
    ap.add_argument("--profile", help="profile to run (default: the `profile` key of params)")
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"],
                    help="override the `device` key (auto|cpu|cuda)")
    ap.add_argument("--log", help="also write everything the stage prints to this file")
    if add_args:
        add_args(ap)
    args = ap.parse_args(argv)
    with _tee_to(args.log):
        try:
            params = load_params(args.params, args.profile)
            args.device = args.device or params.device
            body(params, args)
        except RepurifyError as exc:
            print(f"error [{name}]: {exc}", file=sys.stderr)
            return 2
    return 0


def load_classifiers(params: Params, roles: tuple[str, ...] = paths.ROLES) -> dict[str, Classifier]:
    """The profile's trained classifiers, checked against params, in eval mode and frozen."""
    prof = params.active
    return {role: load_classifier(paths.path(paths.CLASSIFIER, params.profile, role=role),
                                  expect={"arch": getattr(prof.classifiers, role).arch})
            .eval().requires_grad_(False) for role in roles}


def load_cached_attacks(profile: str, role: str) -> dict:
    """The examples ``generate_attacks`` crafted on the ``role`` classifier."""
    f = paths.path(paths.ADVERSARIAL, profile, role=role)
    cached = load_torch(f, produced_by="generate_attacks")
    if not isinstance(cached, dict) or "adversarial" not in cached:
        raise CheckpointError(f"{f}: not a generate_attacks output; rerun that stage")
    return cached


def load_defended(params: Params, defense: str, device: torch.device) -> tuple[DefendedModel, EvalData]:
    """The evaluated test images and ``defense`` (built after seeding) before the frozen target."""
    profile, prof = params.profile, params.active
    target = load_classifiers(params, ("target",))["target"]
    data = load_eval_data(load_dataset(paths.path(paths.DATASET, profile)).split, prof, target, device)
    seed_everything(params.seed)
    artifact = paths.artifact(defense)
    purifier = build_purifier(prof.defenses[defense], artifact and paths.path(artifact, profile), defense,
                              tuple(data.x.shape[1:]), seed=params.seed)
    return DefendedModel(purifier, target).to(device).eval(), data
