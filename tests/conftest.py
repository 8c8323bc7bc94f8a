"""Test-wide settings: CPU, a private MLflow store, GPU tests skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _isolated_mlflow(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Never write to the repository's mlflow.db from tests."""
    mp = pytest.MonkeyPatch()
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    yield
    mp.undo()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
