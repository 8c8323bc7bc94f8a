"""The params.yaml schema: validated once, before any stage does work.

Every stage CLI and the Snakefile call :func:`load_params`; a bad value raises
:class:`ParamsError` whose message names the key path (``profiles.digits.data.
image_size``) and what is expected there.
"""

from __future__ import annotations

import re
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from repurify.errors import ParamsError

_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")


def _ratio(value: Any) -> Any:
    """Accept the papers' notation ``8/255`` for pixel budgets."""
    if isinstance(value, str) and (m := _RATIO.match(value)):
        num, den = (Fraction(g) for g in m.groups())
        if den == 0:
            raise ValueError(f"division by zero in {value!r}")
        return float(num / den)
    return value


Ratio = Annotated[float, BeforeValidator(_ratio)]
PositiveRatio = Annotated[Ratio, Field(gt=0)]
ThreatModel = Literal["oblivious", "blackbox", "whitebox"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataParams(_Strict):
    """Which dataset to load and how to normalise it to uint8 NCHW tensors."""

    name: str
    root: str | None = None  # raw files; default data/raw/<name>
    image_size: int = Field(gt=0)
    channels: Literal[1, 3]
    download: bool = True
    test_fraction: float = Field(default=0.25, gt=0, lt=1)  # digits only
    train_limit: int | None = Field(default=None, gt=0)
    test_limit: int | None = Field(default=None, gt=0)
    train_dir: str = "train"  # ImageFolder layouts only
    test_dir: str = "val"

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from repurify.data import DATASETS

        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; choose one of {sorted(DATASETS)}")
        return v

    @property
    def raw_root(self) -> Path:
        return Path(self.root) if self.root else Path("data/raw") / self.name


class ClassifierParams(_Strict):
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


class ClassifiersParams(_Strict):
    """The frozen target under protection and the substitute for transfer attacks."""

    target: ClassifierParams
    substitute: ClassifierParams


class _Attack(_Strict):
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


def _step_within_budget(v: float, info: ValidationInfo) -> float:
    eps = info.data.get("eps")
    if eps is not None and v > eps:
        raise ValueError(f"step_size {v:g} exceeds eps {eps:g}")
    return v


def _strictly_increasing(v: list[float]) -> list[float]:
    if any(b <= a for a, b in pairwise(v)):
        raise ValueError(f"must increase strictly, got {v}")
    return v


class _IterativeSpec(_Budget):
    step_size: PositiveRatio
    steps: int = Field(gt=0)

    _step_ok = field_validator("step_size")(_step_within_budget)


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


class AutoAttackSpec(_Budget):
    kind: Literal["autoattack"]
    version: Literal["standard", "rand", "custom"] = "standard"
    attacks: list[Literal["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"]] | None = None
    n_queries: int | None = Field(default=None, gt=0)  # Square's query budget; None: AutoAttack's 5000
    n_iter: int | None = Field(default=None, gt=0)  # APGD's iterations; None: AutoAttack's 100

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


class PapernotParams(_Strict):
    """Black-box substitute trained on the defended model's labels (Papernot et al. 2017)."""

    seed_images: int = Field(gt=0)  # held-out test images after the evaluated ones
    rounds: int = Field(gt=0)  # substitute epochs (Jacobian augmentations)
    epochs_per_round: int = Field(gt=0)
    lam: float = Field(gt=0)  # Jacobian augmentation step
    attacks: list[str]  # attacks transferred from it


class EvaluationLimit(_Strict):
    """A cheaper evaluation for one costly defense slot (OAG synthesizes every query anew)."""

    whitebox_attacks: list[str] | None = None  # keys of attacks run white-box; None: all
    n: int | None = Field(default=None, gt=0)  # at most this many images per white-box attack
    cached_n: int | None = Field(default=None, gt=0)  # at most this many per cached (oblivious/transfer) row
    papernot: bool = True  # False: skip the Papernot substitute (it queries the defense often)
    checks: dict[str, Any] = {}  # keys of evaluation.checks replaced for this slot
    adaptive: dict[str, Any] = {}  # keys of evaluation.adaptive replaced for this slot


class ChecksParams(_Strict):
    """Gradient-masking probes (Carlini et al. 2019, Sec. 5): a white-box sweep of eps up to an
    unbounded budget, the accuracy after every iteration, a gradient-free attack (Square)."""

    attack: str  # a pgd/bim key of attacks: its norm, targeting and step size relative to eps
    eps: list[PositiveRatio] = Field(min_length=2)  # increasing; the last one unbounded (1 for L-inf)
    steps: int = Field(gt=0)  # iterations at every eps; the accuracy is recorded after each
    square_queries: int = Field(ge=0)  # Square's budget at the attack's eps; 0: not run
    # randomized defenses: the attack at its eps with EOT over this many draws (EOT convergence)
    eot_probe: list[int] = Field(default=[1, 4, 16, 32], min_length=2)
    grid: int = Field(default=8, gt=0)  # images in the clean / adversarial / purified figure

    _increasing = field_validator("eps", "eot_probe")(_strictly_increasing)


class AdaptiveParams(_Strict):
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
    apgd_iterations: int = Field(default=100, gt=0)  # AutoAttack's 100

    _step_ok = field_validator("step_size")(_step_within_budget)
    _increasing = field_validator("steps", "restarts")(_strictly_increasing)

    @field_validator("steps", "restarts")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if v[0] < 1:
            raise ValueError(f"counts start at 1, got {v}")
        return v


class EvaluationParams(_Strict):
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


class NoneSpec(_Strict):
    kind: Literal["none"]


class JpegSpec(_Strict):
    kind: Literal["jpeg"]
    quality: int = Field(ge=1, le=100)


class BitDepthSpec(_Strict):
    kind: Literal["bit_depth"]
    bits: int = Field(ge=1, le=8)


def _odd(v: int) -> int:
    if v % 2 == 0:
        raise ValueError(f"kernel must be odd (centred on its pixel), got {v}")
    return v


class MedianSpec(_Strict):
    kind: Literal["median_filter"]
    kernel: int = Field(ge=1)

    _kernel_odd = field_validator("kernel")(_odd)


Role = Literal["target", "substitute"]


class DefenseTraining(_Strict):
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


class PgdBudget(_Strict):
    """The L-inf PGD of adversarial training (random start, no restarts)."""

    eps: PositiveRatio
    step_size: PositiveRatio
    steps: int = Field(gt=0)

    _step_ok = field_validator("step_size")(_step_within_budget)


class HgdSpec(_Strict):
    """High-level representation guided denoiser (Liao et al. 2018)."""

    kind: Literal["hgd"]
    architecture: Literal["dunet", "dae"] = "dunet"  # DAE: DUNET without lateral connections
    loss: Literal["pixel", "fgd", "lgd", "cgd"] = "lgd"  # Eq. 3 / Eq. 5 l=-2 / l=-1 / CE
    widths: list[Annotated[int, Field(gt=0)]] = Field(min_length=2)  # C2, then one C3 per entry
    guide: Role = "target"  # the classifier whose representation guides the loss (Table 4)
    sources: list[Role] = Field(min_length=1)  # classifiers attacked to build the training set
    eps_max: PositiveRatio  # eps ~ U{1..eps_levels} * eps_max / eps_levels (Table 1: [1,16]/255)
    eps_levels: int = Field(default=16, gt=0)
    ifgsm_steps: list[Annotated[int, Field(gt=1)]] = [2, 4, 8]
    training: DefenseTraining


class AdvaeSpec(_Strict):
    """Auto-encoder adversarially trained in front of frozen classifiers (AdvAE, Eq. 7/8)."""

    kind: Literal["advae"]
    architecture: Literal["conv_ae", "unet"]
    widths: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)  # encoder channels
    lam: float = Field(ge=0)  # lambda of Eq. 7: weight of the clean reconstruction term
    classifiers: list[Role] = Field(default=["target"], min_length=1)  # Eq. 8 ensemble
    pgd: PgdBudget
    training: DefenseTraining


class _Perceptual(_Strict):
    """F_beta of a perceptual loss: ImageNet VGG-19 (the papers) or the named offline fallback."""

    perceptual: Literal["vgg19", "target_features"]
    vgg_layer: Literal["relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"] = "relu3_4"


class EgcflSpec(_Perceptual):
    """EGC-FL (Yuan & He 2020): TDZ layer, generator G with feedback loop, fusion network Gamma."""

    kind: Literal["egcfl"]
    block: int = Field(default=8, gt=0)  # M: the DCT's M x M blocks
    delta: PositiveRatio  # deadzone half-width on coefficients of [0,1] images (8/255 style)
    transform: bool = True  # False: deadzone on pixels (Table 7 "without transform")
    inverse: bool = True  # TDZ ends with T^-1 (pixels); False: G and P see coefficients
    feedback: bool = True  # False: X_hat = G(X_tilde), no U, V, W, Gamma (Table 7)
    widths: list[Annotated[int, Field(gt=0)]] = Field(min_length=2)  # G: a DUNET-style U-net
    converter_width: int = Field(gt=0)  # channels U and V map to before the concatenation
    generations: int = Field(default=3, gt=0)  # K, trained and evaluated (Gen_k: the ablation stage)
    lambdas: list[Annotated[float, Field(ge=0)]] = Field(  # Eq. 6: lambda_1..3 of L_P, L_A, L_C
        default=[1 / 3] * 3, min_length=3, max_length=3)
    source: Role = "target"  # classifier the PGD training examples are crafted on
    attack: PgdBudget  # the PGD that makes the training set
    training: DefenseTraining


class GclnSpec(_Perceptual):
    """GCLN: generator with a quantized DCT layer, trained against a clean/attacked detector."""

    kind: Literal["gcln"]
    block: int = Field(default=8, gt=0)  # M
    q: PositiveRatio  # quantization step of Eq. 2 on [0,1] images: Qs/255 (Tables 1-4: 5, 10)
    widths: list[Annotated[int, Field(gt=0)]] = Field(min_length=2)  # G's recovery U-net
    detector_widths: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)  # D: strided convs
    lam: float = Field(default=0.5, ge=0, le=1)  # Eq. 3: lambda L_P + (1 - lambda) L_A
    detector_epochs: int = Field(gt=0)  # D's initial training on clean vs attacked images
    grow_clean_set: bool = True  # recovered images C classifies correctly join Omega^o
    source: Role = "target"  # classifier the attacked training images are crafted on
    attack: PgdBudget
    training: DefenseTraining


class OagCalibration(_Strict):
    """Sec. III-D / IV-E: T_N (and the values the paper does not give) from Gaussian-noised
    training images, never adversarial ones. Each list holds the candidates tried."""

    images: int = Field(gt=0)  # the first training images
    noise_sigma: PositiveRatio = 0.25  # on [0,1] pixels (Fig. 4: sigma 0.25)
    max_network_steps: int = Field(gt=0)  # length of the accuracy-vs-steps curve
    eps_g: list[PositiveRatio] = Field(min_length=1)
    beta: list[PositiveRatio] = Field(min_length=1)
    init_std: list[PositiveRatio] = Field(min_length=1)
    tolerance: float = Field(default=0.01, ge=0, lt=1)  # T_N: first step within this of the peak


class OagSpec(_Strict):
    """OAG (Li et al. 2020): per-image online Langevin synthesis with a fresh energy network."""

    kind: Literal["oag"]
    generator: Literal["alternate", "autoencoder"] = "alternate"  # autoencoder: Sec. IV-H baseline
    kernel: int = Field(gt=0)  # k of the k x k convolution (15 at 224 px; Table V)
    filters: int = Field(gt=0)  # K (not in the paper)
    image_steps: int = Field(default=20, gt=0)  # T_I (Table IV)
    network_steps: int | None = Field(default=None, gt=0)  # T_N; None: chosen by calibrate_oag
    eps_g: PositiveRatio | None = None  # None: calibrated (likewise beta and init_std)
    beta: PositiveRatio | None = None
    init_std: PositiveRatio | None = None
    scale: PositiveRatio = 255.0  # pixels live in [0, scale] during the synthesis
    ae_lr: PositiveRatio = 1e-3  # Adam rate of the autoencoder baseline
    batch_size: int = Field(default=64, gt=0)  # images synthesized at once
    calibration: OagCalibration

    _kernel_odd = field_validator("kernel")(_odd)


DefenseSpec = Annotated[NoneSpec | JpegSpec | BitDepthSpec | MedianSpec | HgdSpec | AdvaeSpec
                        | EgcflSpec | GclnSpec | OagSpec, Field(discriminator="kind")]


class TransferEntry(_Strict):
    """A defense slot's variant trained on some classifiers and attacked on others: white-box
    (AdvAE Table 3, HGD Table 4), or oblivious for OAG, which trains nothing (its Table III)."""

    defense: Literal["hgd", "advae", "oag"]
    trained_on: list[str] = []  # AdvAE: the Eq. 8 ensemble; HGD: the guide; OAG: none
    evaluated_on: list[str] = Field(min_length=1)
    threat_model: Literal["whitebox", "oblivious"] = "whitebox"  # oblivious: crafted on the bare model
    attacks: dict[str, list[str]] = {}  # per evaluated classifier, instead of transfer.attacks
    training: DefenseTraining | None = None  # overrides the slot's training settings


class TransferParams(_Strict):
    """Model transfer of defenses (AdvAE Table 3, HGD Table 4, OAG Table III)."""

    zoo: dict[str, ClassifierParams] = {}  # extra classifiers beside target and substitute
    grid: list[TransferEntry] = []
    attacks: list[str] = []  # keys of attacks, run white-box on each (defense, classifier) pair
    n: int = Field(default=100, gt=0)  # test images per pair

    def names(self) -> list[str]:
        return ["target", "substitute", *self.zoo]


class AblationVariant(_Strict):
    """A trained defense slot retrained with some of its keys replaced (Table 7, the Qs sweep)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    defense: Literal["hgd", "advae", "egcfl", "gcln", "oag"]
    set: dict[str, Any] = Field(min_length=1)  # keys of defenses.<defense> and their new values
    # the rows it gets: OAG's Tables IV-V are gray-box (oblivious) only
    threat_models: list[Literal["oblivious", "whitebox"]] = ["oblivious", "whitebox"]

    def spec(self, slot: Any) -> Any:
        """The slot's spec with ``set`` applied, validated like params.yaml."""
        return type(slot).model_validate({**slot.model_dump(), **self.set})


class AblationParams(_Strict):
    """Ablations: EGC-FL's Gen_k at test time (Table 6), retrained variants, TDZ noise energy."""

    generations: list[Annotated[int, Field(gt=0)]] = []  # K values for the trained egcfl slot
    variants: list[AblationVariant] = []
    attacks: list[str] = []  # keys of attacks: oblivious (cached) and white-box rows per variant
    n: int | None = Field(default=None, gt=0)  # test images per variant; None: evaluation.n
    noise_attack: str | None = None  # EGC-FL Fig. 4: noise energy before/after TDZ on its examples


class ProfileParams(_Strict):
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
        from repurify.paths import DEFENSES, SLOT_KINDS

        missing = [d for d in DEFENSES if d not in self.defenses]
        if missing:
            raise ValueError(f"defenses: missing {missing}; every profile configures {list(DEFENSES)}")
        for name, kind in SLOT_KINDS.items():
            if self.defenses[name].kind != kind:
                stage = "calibrate_oag" if name == "oag" else f"train_defense_{name}"
                raise ValueError(f"defenses.{name}.kind: the {name} slot is prepared by {stage} and "
                                 f"must be {kind!r}")
        unknown = [a for a in self.evaluation.papernot.attacks if a not in self.attacks]
        if unknown:
            raise ValueError(f"evaluation.papernot.attacks: {unknown} are not keys of attacks")
        if unknown := [a for a in self.evaluation.autograd_attacks or [] if a not in self.attacks]:
            raise ValueError(f"evaluation.autograd_attacks: {unknown} are not keys of attacks")
        for slot, limit in self.evaluation.limits.items():
            if slot not in self.defenses:
                raise ValueError(f"evaluation.limits.{slot}: not a defense slot; choose from {DEFENSES}")
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
            if entry.defense == "hgd" and len(entry.trained_on) != 1:
                raise ValueError(f"transfer.grid.{i}.trained_on: HGD is guided by one classifier")
            if (entry.defense == "oag") == bool(entry.trained_on):
                raise ValueError(f"transfer.grid.{i}.trained_on: give it for trained defenses only "
                                 "(OAG trains nothing)")
            for name, keys in entry.attacks.items():
                if name not in entry.evaluated_on:
                    raise ValueError(f"transfer.grid.{i}.attacks.{name}: not in evaluated_on")
                if unknown := [a for a in keys if a not in self.attacks]:
                    raise ValueError(f"transfer.grid.{i}.attacks.{name}: {unknown} are not keys of attacks")
        egcfl = self.defenses["egcfl"]
        if egcfl.feedback and egcfl.converter_width < self.data.channels:
            raise ValueError(f"defenses.egcfl.converter_width: {egcfl.converter_width} is below the "
                             f"{self.data.channels} image channels U and V must carry")
        self._check_ablation()
        return self

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
        named = [*ab.attacks, *([ab.noise_attack] if ab.noise_attack else [])]
        if unknown := [a for a in named if a not in self.attacks]:
            raise ValueError(f"ablation.attacks: {unknown} are not keys of attacks")
        if ab.n is not None and ab.n > self.evaluation.n:
            raise ValueError(f"ablation.n: {ab.n} exceeds evaluation.n ({self.evaluation.n}), the images "
                             "with cached oblivious examples")
        names = [v.name for v in ab.variants]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"ablation.variants: names {dupes} are used twice")
        for i, v in enumerate(ab.variants):
            try:
                v.spec(self.defenses[v.defense])
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"ablation.variants.{i}.set: {problems}") from None


class MlflowParams(_Strict):
    experiment: str = Field(min_length=1)


class Params(_Strict):
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
