"""The params.yaml schema: validated once, before any stage does work.

Every stage CLI and the Snakefile call :func:`load_params`; a bad value raises
:class:`ParamsError` whose message names the key path (``profiles.digits.data.
image_size``) and what is expected there.
"""

from __future__ import annotations

import operator
import re
from functools import reduce
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from repurify.attack_specs import (
    AUTOATTACK_ITERATIONS,
    AttackSpec,
    AutoAttackSpec,
    BimSpec,
    CwL2Spec,
    FgsmSpec,
    MifgsmSpec,
    PgdSpec,
)
from repurify.data.params import DataParams
from repurify.defenses.registry import list_purifiers, registry
from repurify.errors import ParamsError
from repurify.schema import (
    DefenseTraining,
    PositiveRatio,
    Strict,
    step_within_budget,
    strictly_increasing,
)

__all__ = ["AttackSpec", "AutoAttackSpec", "BimSpec", "CwL2Spec", "DataParams", "FgsmSpec", "MifgsmSpec",
           "PgdSpec"]


class ClassifierParams(Strict):
    """How to build and train one classifier."""

    arch: str
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    optimizer: Literal["sgd", "adam"]
    lr: float = Field(gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    augment: Literal["none", "crop", "crop_flip"] = "none"  # crop: pad size/8 (4 px at 32)
    seed_offset: int = Field(default=0, ge=0)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from repurify.models import MODELS

        if v not in MODELS:
            raise ValueError(f"unknown architecture {v!r}; choose one of {sorted(MODELS)}")
        return v


class ClassifiersParams(Strict):
    """The frozen target under protection and the substitute for transfer attacks."""

    target: ClassifierParams
    substitute: ClassifierParams


class PapernotParams(Strict):
    """Black-box substitute trained on the defended model's labels (Papernot et al. 2017)."""

    seed_images: int = Field(gt=0)  # held-out images: the first test images not evaluated, or
    # the first training images where ``seeds_from: train`` (a split evaluated whole has none left)
    seeds_from: Literal["test", "train"] = "test"
    rounds: int = Field(gt=0)  # substitute epochs (Jacobian augmentations)
    epochs_per_round: int = Field(gt=0)
    lam: float = Field(gt=0)  # Jacobian augmentation step
    attacks: list[str]  # attacks transferred from it


class EvaluationLimit(Strict):
    """A cheaper evaluation for one costly defense slot (OAG synthesizes every query anew)."""

    whitebox_attacks: list[str] | None = None  # keys of attacks run white-box; None: all
    n: int | None = Field(default=None, gt=0)  # at most this many images per white-box attack
    cached_n: int | None = Field(default=None, gt=0)  # at most this many per cached (oblivious/transfer) row
    papernot: bool = True  # False: skip the Papernot substitute (it queries the defense often)
    checks: dict[str, Any] = {}  # keys of evaluation.checks replaced for this slot
    adaptive: dict[str, Any] = {}  # keys of evaluation.adaptive replaced for this slot


class ChecksParams(Strict):
    """Gradient-masking probes (Carlini et al. 2019, Sec. 5): a white-box sweep of eps up to an
    unbounded budget, the accuracy after every iteration, a gradient-free attack (Square)."""

    attack: str  # a pgd/bim key of attacks: its norm, targeting and step size relative to eps
    eps: list[PositiveRatio] = Field(min_length=2)  # increasing; the last one unbounded (1 for L-inf)
    steps: int = Field(gt=0)  # iterations at every eps; the accuracy is recorded after each
    square_queries: int = Field(ge=0)  # Square's budget at the attack's eps; 0: not run
    # randomized defenses: the attack at its eps with EOT over this many draws (EOT convergence)
    eot_probe: list[int] = Field(default=[1, 4, 16, 32], min_length=2)
    grid: int = Field(default=8, gt=0)  # images in the clean / adversarial / purified figure

    _increasing = field_validator("eps", "eot_probe")(strictly_increasing)


class AdaptiveParams(Strict):
    """The instrument's own white-box attack set (repurify's budgets, not any paper's): on the
    first ``n`` evaluated images, PGD with ``max(steps)`` steps and ``max(restarts)`` restarts
    (best iterate kept), whose accuracy at every listed step and restart count is the convergence
    probe, and AutoAttack's APGD sub-attacks (against randomized defenses: APGD-CE and APGD-DLR
    with EOT). The worst case over every attack is taken on these images, and the checks use them."""

    n: int = Field(gt=0)
    norm: Literal["linf", "l2"] = "linf"
    eps: PositiveRatio
    step_size: PositiveRatio
    steps: list[int] = Field(default=[25, 50, 100, 200], min_length=2)
    restarts: list[int] = Field(default=[1, 5, 10], min_length=2)
    autoattack: list[Literal["apgd-ce", "apgd-dlr", "apgd-t"]] = ["apgd-ce", "apgd-t"]
    apgd_iterations: int = Field(default=AUTOATTACK_ITERATIONS, gt=0)

    _step_ok = field_validator("step_size")(step_within_budget)
    _increasing = field_validator("steps", "restarts")(strictly_increasing)

    @field_validator("steps", "restarts")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if v[0] < 1:
            raise ValueError(f"counts start at 1, got {v}")
        return v


class EvaluationParams(Strict):
    """How many test images, in which batch size; against randomized defenses, EOT's draws per
    gradient and the fresh draws that score each image."""

    n: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    eot_samples: int = Field(default=20, gt=0)  # EOT: mean of this many per-draw loss gradients
    draws: int = Field(default=5, gt=0)  # randomized defenses: each image scored on R fresh draws
    papernot: PapernotParams
    # white-box attacks also run through autograd's own gradients at the non-differentiable layers
    # of purifiers whose papers did so (EGC-FL, GCLN); None: every white-box attack
    autograd_attacks: list[str] | None = None
    limits: dict[str, EvaluationLimit] = {}  # defense slot -> a cheaper evaluation
    # OAG Sec. IV-A: evaluate on this many correctly classified test images per class (then n must
    # be per_class x classes); None: the first n test images
    per_class: int | None = Field(default=None, gt=0)
    checks: ChecksParams
    adaptive: AdaptiveParams

    def checks_for(self, slot: str) -> ChecksParams:
        """The checks of ``slot``, with its ``limits.<slot>.checks`` replacements applied."""
        limit = self.limits.get(slot)
        if limit is None or not limit.checks:
            return self.checks
        return ChecksParams.model_validate({**self.checks.model_dump(), **limit.checks}, strict=False)

    def adaptive_for(self, slot: str) -> AdaptiveParams:
        """The adaptive set of ``slot``, with its ``limits.<slot>.adaptive`` replacements applied."""
        limit = self.limits.get(slot)
        if limit is None or not limit.adaptive:
            return self.adaptive
        return AdaptiveParams.model_validate({**self.adaptive.model_dump(), **limit.adaptive},
                                             strict=False)





class TransferEntry(Strict):
    """A defense slot's variant trained on some classifiers and attacked on others: white-box
    (AdvAE Table 3), oblivious (OAG Table III, nothing trained; HGD Table 4, whose fixed test sets
    this crafts on the evaluated model: ours)."""

    defense: str  # a defense slot of kind hgd, advae or oag
    trained_on: list[str] = []  # AdvAE: the Eq. 8 ensemble; HGD: the guide; OAG: none
    evaluated_on: list[str] = Field(min_length=1)
    # oblivious: crafted on the bare evaluated model (OAG Table III; HGD Table 4: ours)
    threat_models: list[Literal["oblivious", "whitebox"]] = Field(default=["whitebox"], min_length=1)
    attacks: dict[str, list[str]] = {}  # per evaluated classifier, instead of transfer.attacks
    training: DefenseTraining | None = None  # overrides the slot's training settings


class TransferParams(Strict):
    """Model transfer of defenses (AdvAE Table 3, HGD Table 4, OAG Table III)."""

    zoo: dict[str, ClassifierParams] = {}  # extra classifiers beside target and substitute
    grid: list[TransferEntry] = []
    attacks: list[str] = []  # keys of attacks, run white-box on each (defense, classifier) pair
    n: int = Field(default=100, gt=0)  # test images per pair

    def names(self) -> list[str]:
        return ["target", "substitute", *self.zoo]

    @property
    def runs(self) -> bool:
        """Whether the profile has a ``transfer`` stage."""
        return bool(self.grid or self.zoo)


class AblationVariant(Strict):
    """A trained defense slot retrained with some of its keys replaced (Table 7, the Qs sweep)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    defense: str  # a defense slot: a trained kind, or oag
    set: dict[str, Any] = Field(min_length=1)  # keys of defenses.<defense> and their new values
    # the rows it gets: OAG's Tables IV-V are gray-box (oblivious) only
    threat_models: list[Literal["oblivious", "whitebox"]] = ["oblivious", "whitebox"]

    def spec(self, slot: Any) -> Any:
        """The slot's spec with ``set`` applied, validated like params.yaml."""
        return type(slot).model_validate({**slot.model_dump(), **self.set})


class AblationParams(Strict):
    """Ablations: EGC-FL's Gen_k at test time (Table 6), retrained variants, TDZ noise energy."""

    generations: list[Annotated[int, Field(gt=0)]] = []  # K values for the trained egcfl slot
    variants: list[AblationVariant] = []
    attacks: list[str] = []  # keys of attacks: oblivious (cached) and white-box rows per variant
    n: int | None = Field(default=None, gt=0)  # test images per variant; None: evaluation.n
    noise_attack: str | None = None  # EGC-FL Fig. 4: noise energy before/after TDZ on its examples

    @property
    def runs(self) -> bool:
        """Whether the profile has an ``ablation`` stage."""
        return bool(self.generations or self.variants or self.noise_attack)


TRANSFER_KINDS = ("hgd", "advae", "oag")  # the kinds repurify.transfer implements
BUDGET_KEYS = ("eps", "eps_max")  # the radii of Lp balls anywhere in a profile
# the registered kinds' specs, told apart by `kind`
DefenseSpec = Annotated[reduce(operator.or_, [d.spec for d in registry().values()]),
                        Field(discriminator="kind")]


class ProfileParams(Strict):
    """One dataset setting: data, classifiers, attacks, defenses, evaluation and transfer."""

    description: str
    data: DataParams
    classifiers: ClassifiersParams
    attacks: dict[str, AttackSpec]
    evaluation: EvaluationParams
    defenses: dict[str, DefenseSpec]
    transfer: TransferParams = TransferParams()
    ablation: AblationParams = AblationParams()

    @model_validator(mode="after")
    def _cross_refs(self) -> ProfileParams:
        if not self.defenses:
            raise ValueError(f"defenses: none given; name at least one of the registered kinds "
                             f"{list_purifiers()}")
        unknown = [a for a in self.evaluation.papernot.attacks if a not in self.attacks]
        if unknown:
            raise ValueError(f"evaluation.papernot.attacks: {unknown} are not keys of attacks")
        if unknown := [a for a in self.evaluation.autograd_attacks or [] if a not in self.attacks]:
            raise ValueError(f"evaluation.autograd_attacks: {unknown} are not keys of attacks")
        for slot, limit in self.evaluation.limits.items():
            if slot not in self.defenses:
                raise ValueError(f"evaluation.limits.{slot}: not a defense slot; choose from "
                                 f"{list(self.defenses)}")
            if unknown := [a for a in limit.whitebox_attacks or [] if a not in self.attacks]:
                raise ValueError(f"evaluation.limits.{slot}.whitebox_attacks: {unknown} are not "
                                 "keys of attacks")
            for part, replaced in (("checks", self.evaluation.checks_for),
                                   ("adaptive", self.evaluation.adaptive_for)):
                try:
                    replaced(slot)
                except ValidationError as exc:
                    err = exc.errors()[0]
                    key = ".".join(str(p) for p in err["loc"])
                    raise ValueError(f"evaluation.limits.{slot}.{part}.{key}: {err['msg']}") from None
        for slot in self.defenses:
            self._check_adaptive_images(slot)
        checks = self.evaluation.checks
        spec = self.attacks.get(checks.attack)
        if spec is None or spec.kind not in ("pgd", "bim") or "oblivious" not in spec.threat_models:
            raise ValueError(f"evaluation.checks.attack: {checks.attack!r} must name a pgd or bim entry "
                             "of attacks that runs oblivious (its cached examples fill the figures)")
        tr = self.transfer
        if unknown := [a for a in tr.attacks if a not in self.attacks]:
            raise ValueError(f"transfer.attacks: {unknown} are not keys of attacks")
        if clash := [z for z in tr.zoo if z in ("target", "substitute")]:
            raise ValueError(f"transfer.zoo: {clash} would shadow a classifier role; rename it")
        for i, entry in enumerate(tr.grid):
            for key in ("trained_on", "evaluated_on"):
                if unknown := [c for c in getattr(entry, key) if c not in tr.names()]:
                    raise ValueError(f"transfer.grid.{i}.{key}: {unknown} are not classifiers; "
                                     f"choose from {tr.names()}")
            kind = self._slot_kind(f"transfer.grid.{i}.defense", entry.defense, TRANSFER_KINDS)
            if kind == "hgd" and len(entry.trained_on) != 1:
                raise ValueError(f"transfer.grid.{i}.trained_on: HGD is guided by one classifier")
            if (kind == "oag") == bool(entry.trained_on):
                raise ValueError(f"transfer.grid.{i}.trained_on: give it for trained defenses only "
                                 "(OAG trains nothing)")
            for name, keys in entry.attacks.items():
                if name not in entry.evaluated_on:
                    raise ValueError(f"transfer.grid.{i}.attacks.{name}: not in evaluated_on")
                if unknown := [a for a in keys if a not in self.attacks]:
                    raise ValueError(f"transfer.grid.{i}.attacks.{name}: {unknown} are not keys of attacks")
        for name, spec in self.defenses.items():
            if spec.kind == "hgd" and "substitute" in spec.sources:
                raise ValueError(f"defenses.{name}.sources: the substitute crafts the black-box rows, "
                                 "and HGD's black-box set comes from a model held out of training "
                                 "(Sec. 4.1); use sources: [target]")
            if spec.kind == "egcfl" and spec.feedback and spec.converter_width < self.data.channels:
                raise ValueError(f"defenses.{name}.converter_width: {spec.converter_width} is below "
                                 f"the {self.data.channels} image channels U and V must carry")
        self._check_ablation()
        self._check_budgets()
        return self

    def _check_budgets(self) -> None:
        """Every radius (``eps``, ``eps_max``) within the largest distance its norm allows between
        images in [0, 1]: 1 in L-inf (every pixel free), sqrt(pixels) in L2."""
        pixels = self.data.channels * self.data.image_size ** 2
        largest = {"linf": (1.0, "1 already leaves every pixel free"),
                   "l2": (pixels ** 0.5, f"sqrt({pixels}), the diagonal of the image cube")}
        checks_norm = getattr(self.attacks.get(self.evaluation.checks.attack), "norm", "linf")

        def walk(node: Any, key: str, norm: str) -> None:
            if isinstance(node, list):
                for i, item in enumerate(node):
                    walk(item, f"{key}.{i}", norm)
                return
            if not isinstance(node, dict):
                return
            norm = checks_norm if key.endswith("checks") else node.get("norm", norm)
            for name, value in node.items():
                if name not in BUDGET_KEYS:
                    walk(value, f"{key}.{name}", norm)
                    continue
                limit, why = largest[norm]
                for v in value if isinstance(value, list) else [value]:
                    if v > limit + 1e-9:
                        raise ValueError(f"{key}.{name}: {v:g} exceeds {limit:g}, the largest {norm} "
                                         f"distance between images in [0, 1] ({why}); lower it")

        dump = self.model_dump(mode="json")
        for part in ("attacks", "evaluation", "defenses", "ablation"):
            walk(dump[part], part, "linf")

    def _slot_kind(self, key: str, slot: str, kinds: tuple[str, ...]) -> str:
        """The kind of defense slot ``slot``, which ``key`` names and which must be one of ``kinds``."""
        if slot not in self.defenses:
            raise ValueError(f"{key}: {slot!r} is not a defense slot; choose from {list(self.defenses)}")
        if (kind := self.defenses[slot].kind) not in kinds:
            raise ValueError(f"{key}: slot {slot!r} holds a {kind!r} defense; this runs {list(kinds)}")
        return kind

    def _check_adaptive_images(self, slot: str) -> None:
        """Every white-box attack of ``slot`` covers the adaptive images, so the worst case can
        take each of them into account on the same images."""
        ev, limit = self.evaluation, self.evaluation.limits.get(slot)
        key = (f"evaluation.limits.{slot}.adaptive.n" if limit and "n" in limit.adaptive
               else "evaluation.adaptive.n")
        n = ev.adaptive_for(slot).n
        if n > ev.n:
            raise ValueError(f"{key}: {n} exceeds evaluation.n ({ev.n}), the images evaluated")
        for name, spec in self.attacks.items():
            if "whitebox" not in spec.threat_models or (
                    limit and limit.whitebox_attacks is not None and name not in limit.whitebox_attacks):
                continue
            runs = min(ev.n, spec.n or ev.n, (limit.n if limit else None) or ev.n)
            if runs < n:
                raise ValueError(f"{key}: {n} images, but attacks.{name} runs white-box against the "
                                 f"{slot!r} defense on only {runs}; lower {key} or raise that "
                                 "attack's n")

    def _check_ablation(self) -> None:
        ab = self.ablation
        if unknown := [a for a in ab.attacks if a not in self.attacks]:
            raise ValueError(f"ablation.attacks: {unknown} are not keys of attacks")
        if ab.noise_attack and ab.noise_attack not in self.attacks:
            raise ValueError(f"ablation.noise_attack: {ab.noise_attack!r} is not a key of attacks; "
                             f"choose from {list(self.attacks)}")
        if ab.n is not None and ab.n > self.evaluation.n:
            raise ValueError(f"ablation.n: {ab.n} exceeds evaluation.n ({self.evaluation.n}), the images "
                             "with cached oblivious examples")
        names = [v.name for v in ab.variants]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"ablation.variants: names {dupes} are used twice")
        if ab.generations or ab.noise_attack:
            self._slot_kind("ablation.generations", "egcfl", ("egcfl",))
        ablated = (*list_purifiers("train"), "oag")
        for i, v in enumerate(ab.variants):
            self._slot_kind(f"ablation.variants.{i}.defense", v.defense, ablated)
            try:
                v.spec(self.defenses[v.defense])
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"ablation.variants.{i}.set: {problems}") from None


def prepared(profile: ProfileParams, how: str) -> list[str]:
    """The profile's defense slots whose kind is prepared ``how`` (``train`` or ``calibrate``)."""
    kinds = registry()
    return [slot for slot, spec in profile.defenses.items() if kinds[spec.kind].prepare == how]


class MlflowParams(Strict):
    experiment: str = Field(min_length=1)


class Params(Strict):
    """The whole of params.yaml."""

    profile: str
    seed: int = Field(ge=0)
    device: Literal["auto", "cpu", "cuda"]
    mlflow: MlflowParams
    profiles: dict[str, ProfileParams]

    @model_validator(mode="after")
    def _profile_exists(self) -> Params:
        if self.profile not in self.profiles:
            raise ValueError(
                f"profile {self.profile!r} is not defined; choose one of {sorted(self.profiles)}"
            )
        return self

    @property
    def active(self) -> ProfileParams:
        return self.profiles[self.profile]


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads ``1e-3`` as a string (YAML 1.1); DVC reads it as a float (1.2)."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?$|^[-+]?\d+[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file the way DVC does (YAML 1.2 floats)."""
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_Yaml12Loader)


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid params ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        loc = list(err["loc"])
        for i, part in enumerate(loc[:-2]):  # drop the union tag pydantic adds after a name
            if part in ("attacks", "defenses") and i + 2 < len(loc):
                del loc[i + 2]
                break
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("kind")
        key = ".".join(str(p) for p in loc) or "<top level>"
        msg = err["msg"].removeprefix("Value error, ")
        if m := re.match(r"^([\w.]+): (.*)$", msg, re.S):  # a cross-field check names its key
            key, msg = f"{key}.{m.group(1)}", m.group(2)
        got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
        if len(got) > 80:
            got = ""
        lines.append(f"  {key}: {msg}{got}")
    lines.append(f"Fix these keys in {source} and rerun.")
    return "\n".join(lines)


def validate_params(raw: Any, source: str = "params.yaml", profile: str | None = None) -> Params:
    """Validate an already-parsed params mapping; ``profile`` overrides its key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    if profile is not None:
        raw = {**raw, "profile": profile}
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, source)) from None


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> Params:
    """Read and validate params.yaml; raise :class:`ParamsError` naming each bad key."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run from the repository root (where params.yaml is)")
    try:
        raw = read_yaml(path)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return validate_params(raw, str(path), profile)
