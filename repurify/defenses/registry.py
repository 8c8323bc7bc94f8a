"""The purifier registry: every defense kind the pipeline can prepare, evaluate, check and report.

A defense module declares one :class:`PurifierDef` in a module-level ``PURIFIER``: its params
spec, its builder, how it is prepared (``none``, ``train`` or ``calibrate``) and by what, and the
:class:`Purifier` class whose attributes declare it differentiable and randomized. The registry
holds the modules of ``repurify.defenses`` that define one, then every entry point of the
``repurify.purifiers`` group (a package's own purifiers), as timm's registry holds its models.
Modules are imported here, never by name elsewhere, so a stage's code is only the defense it runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal

from repurify.defenses.base import Purifier
from repurify.schema import Strict

ENTRY_POINTS = "repurify.purifiers"
Prepare = Literal["none", "train", "calibrate"]


@dataclass(frozen=True)
class BuildContext:
    """What a builder may need beyond the spec: the image shape ``(C, H, W)``, the seed of its
    randomness and, for a calibrated kind, what its calibrator chose."""

    image_shape: tuple[int, ...]
    seed: int = 0
    calibration: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PurifierDef:
    """One defense kind.

    ``build(spec, ctx)`` returns the purifier; for a trained kind, its untrained architecture
    (the checkpoint's weights are loaded into it). ``fit`` is the trainer,
    ``(spec, x, y, classifiers, *, device, gen) -> (purifier, FitHistory, info)``, or the
    calibrator, ``(spec, target, x, y, *, seed, device) -> (result, series)``: a JSON-able result
    with a ``chosen`` entry, and curves to log step by step.
    ``example`` is a small valid spec for the registry's tests. ``known_answer`` is the verdict
    the instrument must reach on a purifier built to have one (its calibration entries).
    """

    kind: str
    spec: type[Strict]
    purifier: type[Purifier]
    build: Callable[[Any, BuildContext], Purifier]
    example: dict[str, Any]
    prepare: Prepare = "none"
    fit: Callable[..., Any] | None = None
    known_answer: str | None = None
    module: str = ""

    def __post_init__(self) -> None:
        if (self.fit is None) != (self.prepare == "none"):
            raise ValueError(f"purifier {self.kind!r}: give `fit` exactly when prepare is not 'none'")
        object.__setattr__(self, "module", self.module or self.spec.__module__)

    @property
    def differentiable(self) -> bool:
        return self.purifier.differentiable

    @property
    def randomized(self) -> bool:
        return self.purifier.randomized

    @property
    def independent_rows(self) -> bool:
        return self.purifier.independent_rows


@cache
def registry() -> dict[str, PurifierDef]:
    """kind -> definition: the built-in modules first, then the installed packages' entry points."""
    found: dict[str, PurifierDef] = {}
    package = importlib.import_module("repurify.defenses")
    modules = [importlib.import_module(f"repurify.defenses.{m.name}")
               for m in pkgutil.iter_modules(package.__path__)]
    defs = [m.PURIFIER for m in modules if hasattr(m, "PURIFIER")]
    defs += [ep.load() for ep in entry_points(group=ENTRY_POINTS)]
    for d in defs:
        if not isinstance(d, PurifierDef):
            raise TypeError(f"{d!r} registered as a purifier is not a PurifierDef")
        if d.kind in found and found[d.kind] is not d:
            raise ValueError(f"purifier kind {d.kind!r} is registered twice ({found[d.kind].module}, "
                             f"{d.module})")
        found[d.kind] = d
    return found


def list_purifiers(prepare: Prepare | None = None) -> list[str]:
    """The registered kinds, sorted; only those prepared this way if ``prepare`` is given."""
    return sorted(k for k, d in registry().items() if prepare in (None, d.prepare))


def get(kind: str) -> PurifierDef:
    try:
        return registry()[kind]
    except KeyError:
        raise KeyError(f"no purifier kind {kind!r}; registered: {list_purifiers()}") from None
