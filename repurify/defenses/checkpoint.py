"""What a defense's preparing stage wrote: a trained purifier's weights, or a calibration, each
with the params that made it.

Loading compares the recorded defense params with the current ones, so a purifier is never
evaluated under params it was not trained or calibrated with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repurify.defenses.base import Purifier
from repurify.defenses.registry import BuildContext, get
from repurify.errors import CheckpointError
from repurify.io import load_json, load_torch, save_torch

FORMAT_VERSION = 1


def save_defense(path: str | Path, purifier: Purifier, spec: Any, meta: dict[str, Any]) -> None:
    """Save the weights with ``spec`` (the defense's params) and ``meta`` (image shape, ...)."""
    save_torch(path, {"format_version": FORMAT_VERSION, "spec": spec.model_dump(mode="json"), **meta,
                      "state_dict": {k: v.detach().cpu() for k, v in purifier.state_dict().items()}})


def differences(saved: Any, current: Any, made: str = "trained", prefix: str = "") -> list[str]:
    """``key: trained with X, params say Y`` for every leaf where the two params trees differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [d for k in sorted(saved.keys() | current.keys())
                for d in differences(saved.get(k), current.get(k), made, f"{prefix}{k}.")]
    return [] if saved == current else [f"{prefix[:-1]}: {made} with {saved!r}, params say {current!r}"]


def _mismatch(path: str | Path, name: str, stage: str, diffs: list[str]) -> CheckpointError:
    return CheckpointError(f"{path} does not match params defenses.{name}:\n  " + "\n  ".join(diffs)
                           + f"\nrerun the `{stage}` stage (dvc repro / snakemake)")


def load_defense(path: str | Path, spec: Any, name: str, image_shape: tuple[int, ...]) -> Purifier:
    """Rebuild the trained purifier ``defenses.<name>`` describes; fail clearly on any mismatch."""
    stage = f"train_defense_{name}"
    blob = load_torch(path, produced_by=stage)
    if not isinstance(blob, dict) or not {"format_version", "spec", "image_shape",
                                          "state_dict"} <= blob.keys():
        raise CheckpointError(f"{path}: not a repurify defense checkpoint; rerun the `{stage}` stage")
    diffs = differences(blob["spec"], spec.model_dump(mode="json"))
    if list(blob["image_shape"]) != list(image_shape):
        diffs.append(f"image_shape: trained with {blob['image_shape']}, data has {list(image_shape)}")
    if diffs:
        raise _mismatch(path, name, stage, diffs)
    purifier = get(spec.kind).build(spec, BuildContext(tuple(image_shape)))
    try:
        purifier.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit defenses.{name}: {str(exc)[:300]}") from None
    return purifier.eval()


def load_calibration(path: str | Path, spec: Any, name: str) -> dict[str, Any]:
    """The values ``calibrate_<name>`` chose, after checking it ran under ``defenses.<name>``."""
    stage = f"calibrate_{name}"
    blob = load_json(path, produced_by=stage)
    if not isinstance(blob, dict) or not {"spec", "chosen"} <= blob.keys():
        raise CheckpointError(f"{path}: not a {stage} output; rerun that stage")
    if diffs := differences(blob["spec"], spec.model_dump(mode="json"), "calibrated"):
        raise _mismatch(path, name, stage, diffs)
    return blob["chosen"]
