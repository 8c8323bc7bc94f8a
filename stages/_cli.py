"""Shared stage CLI: parse ``--profile/--params/--device/--log``, validate, report errors plainly."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from repurify import paths
from repurify.defenses import get, load_calibration
from repurify.errors import CheckpointError, ParamsError, RepurifyError
from repurify.io import load_torch
from repurify.models import load_classifier
from repurify.models.classifier import Classifier
from repurify.params import Params, load_params


class _Tee:
    """Write to the terminal stream and a log file; keeps the stream's TTY-ness for tqdm.

    The log gets whole lines, each flushed as it ends (``tail -f`` follows it), and of a line
    a bar redrew with ``\r`` only its last frame."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream, self._log, self._line = stream, log, ""

    def write(self, text: str) -> int:
        *ended, self._line = (self._line + text).split("\n")
        if ended:
            self._log.write("".join(line.rsplit("\r", 1)[-1] + "\n" for line in ended))
            self._log.flush()
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def close_line(self) -> None:
        """Write what is left of an unfinished line (the stage is ending)."""
        if self._line.rsplit("\r", 1)[-1]:
            self._log.write(self._line.rsplit("\r", 1)[-1] + "\n")
        self._line = ""

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
        sys.stdout, sys.stderr = tees = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            for tee in tees:
                tee.close_line()
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
            if getattr(args, "defense", None) is not None:  # a per-defense stage: a slot of the profile
                defense_slot(params, args.defense)
            body(params, args)
        except RepurifyError as exc:
            print(f"error [{name}]: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C: outputs are written atomically, so none is half-written
            print(f"\n{name}: interrupted; its MLflow run is marked FAILED", file=sys.stderr)
            return 130
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


def add_defense_arg(ap: argparse.ArgumentParser) -> None:
    """``--defense SLOT``: the profile's defense slot a per-defense stage runs on."""
    ap.add_argument("--defense", required=True, help="a key of the profile's `defenses`")


def defense_slot(params: Params, defense: str, prepare: str | None = None) -> Any:
    """The spec of slot ``defense``, checked to exist (and to be prepared by ``prepare``)."""
    prof = params.active
    if defense not in prof.defenses:
        raise ParamsError(f"--defense {defense}: not a defense of profile {params.profile!r}; choose "
                          f"from {list(prof.defenses)} (profiles.{params.profile}.defenses)")
    spec = prof.defenses[defense]
    if prepare is not None and get(spec.kind).prepare != prepare:
        raise ParamsError(f"--defense {defense}: its kind {spec.kind!r} is not prepared by `{prepare}`")
    return spec


def calibration(params: Params, defense: str) -> dict[str, Any]:
    """What ``calibrate_<defense>`` chose for the profile's slot ``defense``."""
    return load_calibration(paths.path(paths.CALIBRATION, params.profile, defense=defense),
                            defense_slot(params, defense, "calibrate"), defense)
