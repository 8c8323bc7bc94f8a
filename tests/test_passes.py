"""The pass counter: outermost network calls counted by shape and grad state, backwards through
them, and the compute bound (count x each call kind's cost alone) that a stage records."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from repurify import passes
from repurify.defenses.base import DefendedModel, Identity, Purifier
from repurify.models.classifier import build_classifier
from repurify.params import load_params
from repurify.tracking import stage_run

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (1, 8, 8)


def _classifier() -> nn.Module:
    return build_classifier("small_cnn", SHAPE, 10, (0.5,), (0.25,))


class _Wrapping(Purifier):
    """A purifier that runs a classifier inside its own call (like OAG's networks)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inner(x)
        return x


class _Sleeping(Purifier):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return x


def test_counting_is_off_unless_asked() -> None:
    assert passes.active() is None
    clf = _classifier()
    clf(torch.rand(2, *SHAPE))
    with passes.counting() as p:
        clf(torch.rand(2, *SHAPE))
    assert passes.active() is None and sum(p.forward.values()) == 1


def test_outermost_calls_and_backwards_are_counted_by_kind() -> None:
    clf = _classifier()
    model = DefendedModel(Identity(), clf)
    with passes.counting() as p:
        with torch.no_grad():
            model(torch.rand(4, *SHAPE))
            model(torch.rand(4, *SHAPE))
        x = torch.rand(3, *SHAPE, requires_grad=True)
        model(x).sum().backward()
        _Wrapping(clf)(torch.rand(5, *SHAPE))  # the classifier inside is part of the purifier's call
    kinds = {(type(p.modules[c.module]).__name__, c.shape[0], c.grad, c.input_grad): n
             for c, n in p.forward.items()}
    assert kinds == {("Identity", 4, False, False): 2, ("Classifier", 4, False, False): 2,
                     ("Identity", 3, True, True): 1, ("Classifier", 3, True, True): 1,
                     ("_Wrapping", 5, True, False): 1}
    assert p.images(p.forward) == 2 * 4 + 2 * 4 + 3 + 3 + 5
    # the identity hands back its input: nothing runs backward through it
    assert {type(p.modules[c.module]).__name__: n for c, n in p.backward.items()} == {"Classifier": 1}
    assert p.depth == 0


def test_a_training_step_is_counted_with_its_weights_gradient() -> None:
    clf = _classifier()
    with passes.counting() as p:
        nn.functional.cross_entropy(clf(torch.rand(6, *SHAPE)), torch.zeros(6, dtype=torch.long)).backward()
    (call,) = p.backward
    assert call.weights_grad and not call.input_grad and call.shape == (6, *SHAPE)


def test_the_bound_is_at_least_the_counted_calls_own_time() -> None:
    # known answer: each call sleeps 10 ms, so 3 calls alone take at least 30 ms
    slow = _Sleeping()
    with passes.counting() as p:
        for _ in range(3):
            slow(torch.rand(2, *SHAPE))
    assert passes.bound_seconds(p) >= 0.03
    assert passes.active() is None  # the timing's own calls were not counted into anything


def test_costs_between_measured_batches_are_interpolated() -> None:
    assert passes._sizes(1) == [1]
    assert passes._sizes(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    costs = {64: 1.0, 100: 4.0}
    assert passes._interpolate(costs, 64) == 1.0
    assert passes._interpolate(costs, 82) == pytest.approx(2.5)
    assert passes._interpolate(costs, 100) == 4.0


def test_the_timing_leaves_the_weights_as_it_found_them() -> None:
    clf = _classifier().requires_grad_(False)
    with passes.counting() as p:  # counted while training, timed after the weights were frozen
        clf.requires_grad_(True)
        clf(torch.rand(2, *SHAPE)).sum().backward()
        clf.requires_grad_(False)
    assert passes.bound_seconds(p) > 0
    assert not any(w.requires_grad for w in clf.parameters())


def test_a_counted_stage_records_its_passes_and_bound(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = load_params(ROOT / "params.yaml", profile="smoke")
    clf = _classifier()
    with passes.counting(), stage_run("unit", params), torch.no_grad():
        clf(torch.rand(8, *SHAPE))
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(params.mlflow.experiment)
    (run,) = client.search_runs([exp.experiment_id], "tags.`repurify.kind` = 'stage'")
    m = run.data.metrics
    assert m["passes.forward_images"] == 8 and m["passes.backward_images"] == 0
    assert m["stage.bound_seconds"] > 0


def test_the_oag_calibration_counts_its_synthesis() -> None:
    # calibrate_oag synthesizes outside any purifier: its synthesis must still enter the bound
    from dataclasses import replace

    from repurify.calibration import Synthesis, steps_curve
    from repurify.defenses.oag import OagSpec, settings
    from repurify.defenses.registry import get

    spec = OagSpec.model_validate(get("oag").example)
    s = settings(spec, {})
    clf = _classifier()
    x, y = torch.rand(6, *SHAPE), torch.zeros(6, dtype=torch.long)
    other = replace(s, eps_g=2 * s.eps_g)  # a second candidate: the same cost
    synthesis = Synthesis(s)
    with passes.counting() as p:
        curve = steps_curve(clf, x, y, s, torch.arange(6), batch_size=4, synthesis=synthesis)
        steps_curve(clf, x, y, other, torch.arange(6), batch_size=4, synthesis=synthesis)
    assert len(curve) == s.network_steps
    kinds = {(type(p.modules[c.module]).__name__, c.shape[0]): n for c, n in p.forward.items()}
    # the classifier's calls are inside; both candidates are one kind, timed once
    assert kinds == {("Synthesis", 4): 2, ("Synthesis", 2): 2}
    assert list(p.modules.values()) == [synthesis]
    assert not p.backward
    assert {c.device for c in p.forward} == {x.device}  # a module without weights: its input's device
    assert passes.bound_seconds(p) > 0


def test_a_call_kind_is_timed_on_its_inputs_device() -> None:
    # a module without weights (JPEG, OAG's synthesis) has no device of its own: the input's counts
    class Where(passes.Counted):
        def __init__(self) -> None:
            super().__init__()
            self.devices: set[torch.device] = set()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.devices.add(x.device)
            return x * 2

    m = Where()
    kind = passes.Call(id(m), SHAPE, torch.float32, torch.device("meta"), False, False, False, False)
    passes._cost(m, kind, 2, False)
    assert m.devices == {torch.device("meta")}
