"""results/<profile>/: a reference run copied and checked against dvc.lock; the check can fail."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from workflow.results import PROVENANCE, copy, differences

ROOT = Path(__file__).resolve().parents[1]


def test_committed_digits_results_match_the_lock() -> None:
    """The report linked from the README is the one dvc.lock records (rerun `python -m
    workflow.results --profile digits` after `dvc repro`)."""
    assert differences("digits", ROOT / "results" / "digits") == []
    provenance = json.loads((ROOT / "results" / "digits" / PROVENANCE).read_text())
    assert provenance["profile"] == "digits" and provenance["commit"] and provenance["device"]


def test_the_archived_complete_study_matches_the_lock_it_keeps() -> None:
    """results/digits_full: the complete study, run when its params were named digits, checked
    against its own dvc.lock."""
    folder = ROOT / "results" / "digits_full"
    assert differences("digits", folder, lock=folder / "dvc.lock") == []
    assert differences("digits", folder) != []  # the committed lock is the quick study's


def _lock(tmp_path: Path, files: dict[str, bytes]) -> Path:
    outs = [{"path": f"reports/p/{rel}", "hash": "md5", "md5": hashlib.md5(data).hexdigest(),
             "size": len(data)} for rel, data in files.items()]
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {"report": {"outs": outs}}}))
    return lock


def test_a_stale_missing_or_stray_file_is_caught_and_never_copied(tmp_path: Path) -> None:
    files = {"report.md": b"# report\n", "figures/grid_x.png": b"png"}
    lock = _lock(tmp_path, files)
    source = tmp_path / "reports" / "p"
    for rel, data in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    (source / "scratch.txt").write_text("not recorded")  # left behind, not a reason to refuse
    results = tmp_path / "results" / "p"
    assert copy("p", results, source, lock) == []
    assert not (results / "scratch.txt").exists()
    assert differences("p", results, lock) == [] and (results / PROVENANCE).is_file()
    (results / "report.md").write_bytes(b"# edited\n")
    (results / "figures" / "grid_x.png").unlink()
    (results / "notes.txt").write_text("x")
    problems = differences("p", results, lock)
    assert problems[0] == "figures/grid_x.png: missing"
    assert problems[1].startswith("report.md: md5 ") and problems[2] == (
        "notes.txt: not an output dvc.lock records")
    (source / "report.md").write_bytes(b"# newer run\n")
    assert copy("p", results, source, lock)[0].startswith("report.md: md5 ")  # refused
    assert (results / "report.md").read_bytes() == b"# edited\n"
