"""The tree stays ruff clean (pyproject.toml holds the rule set)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.repo_copy import ROOT


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed by the dev extra")
def test_ruff_clean() -> None:
    res = subprocess.run(["ruff", "check", "--output-format", "concise", "."], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
