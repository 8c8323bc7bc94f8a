"""The pieces every params spec is built from: strict frozen models, the papers' ``8/255``
notation, and the validators and sub-models several specs share."""

from __future__ import annotations

import re
from fractions import Fraction
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")


def ratio(value: Any) -> Any:
    """Accept the papers' notation ``8/255`` for pixel budgets."""
    if isinstance(value, str) and (m := _RATIO.match(value)):
        num, den = (Fraction(g) for g in m.groups())
        if den == 0:
            raise ValueError(f"division by zero in {value!r}")
        return float(num / den)
    return value


Ratio = Annotated[float, BeforeValidator(ratio)]
PositiveRatio = Annotated[Ratio, Field(gt=0)]
ThreatModel = Literal["oblivious", "blackbox", "whitebox"]
Role = Literal["target", "substitute"]


class Strict(BaseModel):
    """Unknown keys and implicit type conversions are errors; validated values are frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def step_within_budget(v: float, info: ValidationInfo) -> float:
    eps = info.data.get("eps")
    if eps is not None and v > eps:
        raise ValueError(f"step_size {v:g} exceeds eps {eps:g}")
    return v


def strictly_increasing(v: list[float]) -> list[float]:
    if any(b <= a for a, b in pairwise(v)):
        raise ValueError(f"must increase strictly, got {v}")
    return v


def odd(v: int) -> int:
    if v % 2 == 0:
        raise ValueError(f"kernel must be odd (centred on its pixel), got {v}")
    return v


class DefenseTraining(Strict):
    """Adam with plateau decay; the checkpoint with the lowest validation loss is kept."""

    epochs: int = Field(gt=0)  # at most this many epochs
    batch_size: int = Field(gt=0)
    lr: float = Field(default=1e-3, gt=0)
    lr_decay: float = Field(gt=0, lt=1)  # factor applied when the validation loss plateaus
    min_lr: float = Field(default=0.0, ge=0)
    plateau_patience: int = Field(ge=0)  # epochs without improvement before decaying
    early_stop_patience: int | None = Field(default=None, gt=0)  # None: run all epochs
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    train_limit: int | None = Field(default=None, gt=0)  # train on the first n images only


class PgdBudget(Strict):
    """The L-inf PGD of adversarial training (random start, no restarts)."""

    eps: PositiveRatio
    step_size: PositiveRatio
    steps: int = Field(gt=0)

    _step_ok = field_validator("step_size")(step_within_budget)


class Perceptual(Strict):
    """F_beta of a perceptual loss: ImageNet VGG-19 (the papers) or the named offline fallback."""

    perceptual: Literal["vgg19", "target_features"]
    vgg_layer: Literal["relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"] = "relu3_4"
