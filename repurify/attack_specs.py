"""The ``attacks`` params: one spec per attack kind, told apart by ``kind``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from repurify.schema import PositiveRatio, Strict, ThreatModel, step_within_budget


class _Attack(Strict):
    """What every attack entry may set: targeting, threat models, a smaller image count."""

    targeted: Literal["none", "random", "least_likely"] = "none"
    threat_models: list[ThreatModel] = ["oblivious", "blackbox", "whitebox"]
    n: int | None = Field(default=None, gt=0)  # evaluate on fewer images (costly attacks)


class _Budget(_Attack):
    """An Lp ball: ``norm`` and radius ``eps`` (the papers' ``8/255`` notation is accepted)."""

    norm: Literal["linf", "l2"] = "linf"
    eps: PositiveRatio


class FgsmSpec(_Budget):
    kind: Literal["fgsm"]


class _IterativeSpec(_Budget):
    step_size: PositiveRatio
    steps: int = Field(gt=0)

    _step_ok = field_validator("step_size")(step_within_budget)


class BimSpec(_IterativeSpec):
    kind: Literal["bim"]


class PgdSpec(_IterativeSpec):
    kind: Literal["pgd"]
    restarts: int = Field(default=1, gt=0)


class MifgsmSpec(_IterativeSpec):
    kind: Literal["mifgsm"]
    decay: float = Field(default=1.0, ge=0)


class CwL2Spec(_Attack):
    """Unbounded minimum-L2 attack: the report gives accuracy and perturbation sizes."""

    kind: Literal["cw_l2"]
    norm: Literal["l2"] = "l2"
    steps: int = Field(gt=0)
    lr: float = Field(gt=0)
    binary_search_steps: int = Field(gt=0)
    initial_c: float = Field(gt=0)
    confidence: float = Field(default=0.0, ge=0)


AUTOATTACK_ITERATIONS = 100  # APGD's iterations in AutoAttack's standard and rand versions


class AutoAttackSpec(_Budget):
    kind: Literal["autoattack"]
    version: Literal["standard", "rand", "custom"] = "standard"
    attacks: list[Literal["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"]] | None = None
    n_queries: int | None = Field(default=None, gt=0)  # Square's query budget; None: AutoAttack's 5000
    n_iter: int | None = Field(default=None, gt=0)  # APGD's iterations; None: AUTOATTACK_ITERATIONS

    @field_validator("attacks")
    @classmethod
    def _custom_only(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if (v is not None) != (info.data.get("version") == "custom"):
            raise ValueError("give `attacks` exactly when version is 'custom'")
        return v


AttackSpec = Annotated[
    FgsmSpec | BimSpec | PgdSpec | MifgsmSpec | CwL2Spec | AutoAttackSpec,
    Field(discriminator="kind"),
]
