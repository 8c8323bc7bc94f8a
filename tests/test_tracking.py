"""MLflow tracking: one run per stage with params and tags; parallel writers never collide."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from repurify.params import load_params
from repurify.tracking import flatten, stage_run, tracking_uri

ROOT = Path(__file__).resolve().parent.parent


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_default_uri_is_absolute_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking_uri() == "sqlite:////elsewhere/x.db"


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]",
                                                             "d": "None"}


def test_stage_run_logs_params_metrics_tags(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("REPURIFY_ENGINE", "snakemake")
    params = load_params(ROOT / "params.yaml", profile="smoke")
    with stage_run("unit", params) as run:
        run.log_metrics({"loss": 2.0}, step=0)
        run.log_metrics({"loss": 1.0}, step=1)
        run.log_metric("clean_accuracy", 0.5)
        run.log_child("pgd:whitebox", {"attack": "pgd", "threat_model": "whitebox"},
                      {"accuracy": 0.25})
    runs = _client(uri).search_runs(
        [_client(uri).get_experiment_by_name(params.mlflow.experiment).experiment_id])
    assert len(runs) == 2
    (r,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (child,) = [c for c in runs if c.data.tags.get("mlflow.parentRunId") == r.info.run_id]
    assert child.data.tags["attack"] == "pgd" and child.data.tags["stage"] == "unit"
    assert child.data.metrics == {"accuracy": 0.25}
    assert r.info.status == "FINISHED"
    assert r.data.metrics == {"loss": 1.0, "clean_accuracy": 0.5}
    assert r.data.params["profile"] == "smoke"
    assert r.data.params["data.train_limit"] == "240"
    assert r.data.tags["stage"] == "unit"
    assert r.data.tags["engine"] == "snakemake"
    assert r.data.tags["profile"] == "smoke"
    assert "git_commit" in r.data.tags
    history = _client(uri).get_metric_history(r.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (1, 1.0)]


def test_failed_stage_is_recorded_as_failed(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = load_params(ROOT / "params.yaml", profile="smoke")
    with pytest.raises(ValueError, match="boom"), stage_run("unit", params):
        raise ValueError("boom")
    exp = _client(uri).get_experiment_by_name(params.mlflow.experiment)
    assert [r.info.status for r in _client(uri).search_runs([exp.experiment_id])] == ["FAILED"]


def _writer(uri: str, i: int) -> None:
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri
    params = load_params(ROOT / "params.yaml", profile="smoke")
    with stage_run(f"parallel{i}", params) as run:
        run.log_metric("i", i)


def test_parallel_stages_share_one_sqlite_store(tmp_path: Path) -> None:
    """Fresh database, four processes at once (the first also creates the schema)."""
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(uri, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    exp = _client(uri).get_experiment_by_name("repurify")
    runs = _client(uri).search_runs([exp.experiment_id])
    assert sorted(r.data.metrics["i"] for r in runs) == [0, 1, 2, 3]
