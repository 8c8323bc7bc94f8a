"""Every registered purifier, the way timm's tests loop over ``list_models()``: its example spec
builds, keeps the image shape and the [0,1] range, declares honestly whether it is differentiable
and randomized (and, where it declares ``independent_rows``, that copies of one image in one batch
draw apart), survives a checkpoint (or calibration) round trip and repeats for a seed. The
known-answer purifiers, dishonest by construction, must fail the declaration checks they were
built to fail."""

from __future__ import annotations

import json

import pytest
import torch

from repurify.defenses import (
    BuildContext,
    PurifierDef,
    bpda,
    build_purifier,
    get,
    list_purifiers,
    load_defense,
    save_defense,
)
from repurify.defenses.base import Purifier
from repurify.params import DefenseSpec

SHAPE = (1, 16, 16)
KINDS = list_purifiers()
HONEST = [k for k in KINDS if get(k).known_answer != "suspected"]


def _build(entry: PurifierDef, seed: int = 0) -> tuple[Purifier, object]:
    spec = entry.spec.model_validate(entry.example)
    torch.manual_seed(seed)  # the initial weights of a trained kind
    return entry.build(spec, BuildContext(SHAPE, seed)).eval(), spec


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(1))


def _input_gradient(purifier: Purifier, x: torch.Tensor, straight_through: bool) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    weights = torch.linspace(-1, 1, x[0].numel()).view(SHAPE)  # a fixed, non-constant loss
    with bpda(straight_through):
        out = purifier(x)
    assert out.requires_grad, "the output carries no graph: attacks cannot back-propagate"
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    return grad


def declaration_problems(entry: PurifierDef) -> list[str]:
    """Where the purifier does not behave as its ``differentiable`` and ``randomized`` say (each
    gradient from a fresh build of the same seed, so a randomized one draws the same noise)."""
    x, problems = _images(), []
    plain, straight = (_input_gradient(_build(entry)[0], x, s) for s in (False, True))
    purifier = _build(entry)[0]
    if entry.differentiable and (not plain.abs().sum() > 0 or not torch.allclose(plain, straight)):
        problems.append("declared differentiable, but its gradient is zero or changes under BPDA")
    if not entry.differentiable and (not straight.abs().sum() > 0 or torch.equal(plain, straight)):
        problems.append("declared non-differentiable, but BPDA changes nothing or passes no gradient")
    with torch.no_grad():
        differ = not torch.equal(purifier(x), purifier(x))
    if differ != entry.randomized:
        problems.append(f"declared randomized={entry.randomized}, but two calls "
                        f"{'differ' if differ else 'agree'}")
    if entry.independent_rows:
        with torch.no_grad():
            copies = purifier(x[:1].expand(4, *SHAPE).contiguous())
        if any(torch.equal(copies[i], copies[j]) for i in range(4) for j in range(i)):
            problems.append("declared independent_rows, but copies of one image in one batch agree")
    return problems


class _SharedNoise(Purifier):
    """Randomized with one draw per call, shared by every row, yet declaring independent rows."""

    randomized = True
    independent_rows = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.1 * torch.randn(1, *x.shape[1:])).clamp(0, 1)


def test_a_shared_draw_declared_row_by_row_is_caught() -> None:
    entry = PurifierDef(kind="shared_noise", spec=get("none").spec, purifier=_SharedNoise,
                        build=lambda spec, ctx: _SharedNoise(), example={"kind": "none"})
    assert declaration_problems(entry) == [
        "declared independent_rows, but copies of one image in one batch agree"]


@pytest.mark.parametrize("kind", KINDS)
def test_example_spec_validates_as_params_do(kind: str) -> None:
    from pydantic import TypeAdapter

    entry = get(kind)
    spec = TypeAdapter(DefenseSpec).validate_python(entry.example, strict=True)
    assert type(spec) is entry.spec and spec.kind == kind
    assert (entry.fit is None) == (entry.prepare == "none")


@pytest.mark.parametrize("kind", KINDS)
def test_purifier_keeps_shape_and_pixel_range(kind: str) -> None:
    purifier, _ = _build(get(kind))
    with torch.no_grad():
        out = purifier(_images())
    assert out.shape == (3, *SHAPE) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("kind", HONEST)
def test_declarations_are_honest(kind: str) -> None:
    entry = get(kind)
    assert declaration_problems(entry) == []


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in HONEST])
def test_known_answer_purifiers_fail_the_declaration_checks(kind: str) -> None:
    entry = get(kind)
    assert declaration_problems(entry)


@pytest.mark.parametrize("kind", HONEST)
def test_same_seed_same_output(kind: str) -> None:
    x = _images()
    with torch.no_grad():
        first, second = (_build(get(kind), seed=7)[0](x) for _ in range(2))
    assert torch.equal(first, second)


@pytest.mark.parametrize("kind", list_purifiers("train"))
def test_checkpoint_round_trip(kind: str, tmp_path) -> None:
    purifier, spec = _build(get(kind), seed=3)
    path = tmp_path / f"{kind}.pt"
    save_defense(path, purifier, spec, {"image_shape": list(SHAPE)})
    loaded = load_defense(path, spec, kind, SHAPE)
    x = _images()
    with torch.no_grad():
        assert torch.equal(loaded(x), purifier(x))
    assert build_purifier(spec, path, kind, SHAPE).state_dict().keys() == purifier.state_dict().keys()


@pytest.mark.parametrize("kind", list_purifiers("calibrate"))
def test_calibration_round_trip(kind: str, tmp_path) -> None:
    purifier, spec = _build(get(kind), seed=5)
    path = tmp_path / f"{kind}_calibration.json"
    path.write_text(json.dumps({"spec": spec.model_dump(mode="json"), "chosen": {}}))
    loaded = build_purifier(spec, path, kind, SHAPE, seed=5)
    x = _images()
    with torch.no_grad():
        assert torch.equal(loaded(x), purifier(x))


def test_registry_holds_the_papers_defenses_and_the_known_answers() -> None:
    assert {"none", "jpeg", "bit_depth", "median_filter", "hgd", "advae", "egcfl", "gcln",
            "oag"} <= set(KINDS)
    assert {k: get(k).known_answer for k in KINDS if get(k).known_answer} == {
        "none": "not detected", "threshold": "suspected", "input_noise": "suspected"}
    assert list_purifiers("train") == ["advae", "egcfl", "gcln", "hgd"]
    assert list_purifiers("calibrate") == ["oag"]
    with pytest.raises(KeyError, match="no purifier kind 'nope'; registered"):
        get("nope")
