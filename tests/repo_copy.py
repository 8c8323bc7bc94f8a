"""Copy the working tree (tracked + untracked, not ignored files) into a scratch repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_DIRS = {"data", "metrics", "reports", "logs"}  # pipeline outputs of this checkout
PIPELINE_STATE = {"dvc.lock"}  # this checkout's DVC run record: a copy starts without one


def copy_repo(dest: Path, profile: str | None = None) -> Path:
    """Copy the repository as git sees it, minus pipeline outputs, into ``dest`` (fresh git repo)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        if rel.split("/", 1)[0] in OUTPUT_DIRS or rel in PIPELINE_STATE:
            continue
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    if profile is not None:
        # the profile's own stages: dvc.yaml and the SLURM profile follow its defenses
        subprocess.run([sys.executable, "-m", "workflow.dag", "--profile", profile], cwd=dest,
                       env=stage_env(dest), check=True, capture_output=True)
    return dest


def stage_env(repo: Path) -> dict[str, str]:
    """Environment for running ``python -m stages.*`` from outside the repository."""
    return {**os.environ, "PYTHONPATH": str(repo)}
