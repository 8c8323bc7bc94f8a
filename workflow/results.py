"""The browsable reference run: ``results/<profile>/`` holds the report stage's outputs (report.md,
summary.json, figures, plot data) and the check stages' image grids, byte for byte as ``dvc.lock``
records them, with where they came from in ``provenance.json``.

    python -m workflow.results --profile digits          # copy reports/digits/ after `dvc repro`
    python -m workflow.results --profile digits --check  # exit 1 where results/ and dvc.lock differ

An archived run (``results/digits_full/``: the complete study, run under its former name) keeps the
``dvc.lock`` that recorded it beside its files.

Copying refuses a file that differs from ``dvc.lock`` (exit 2): rerun the stage first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from workflow.imports import ROOT
from workflow.machine import cpu_name

PROVENANCE = "provenance.json"
LOCK = "dvc.lock"  # an archived run keeps the lock that recorded it beside its files


def recorded(profile: str, lock: Path = ROOT / "dvc.lock") -> dict[str, str]:
    """``dvc.lock``'s md5 of every output under ``reports/<profile>/``, by that relative path."""
    stages = yaml.safe_load(lock.read_text())["stages"]
    prefix = f"reports/{profile}/"
    return {o["path"].removeprefix(prefix): o["md5"] for s in stages.values() for o in s.get("outs", [])
            if o["path"].startswith(prefix)}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _stale(want: dict[str, str], folder: Path) -> list[str]:
    """The recorded files that ``folder`` lacks or holds with another md5."""
    out = [f"{rel}: missing" for rel in sorted(want) if not (folder / rel).is_file()]
    return out + [f"{rel}: md5 {_md5(folder / rel)}, dvc.lock has {md5}" for rel, md5 in sorted(want.items())
                  if (folder / rel).is_file() and _md5(folder / rel) != md5]


def differences(profile: str, results: Path, lock: Path = ROOT / "dvc.lock") -> list[str]:
    """How ``results`` (a ``results/<profile>/`` folder) differs from ``dvc.lock``: empty if not."""
    want = recorded(profile, lock)
    if not want:
        return [f"{lock.name} records no output under reports/{profile}/: is it the {profile} run?"]
    extra = {p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()}
    return _stale(want, results) + [f"{rel}: not an output dvc.lock records"
                                    for rel in sorted(extra - set(want) - {PROVENANCE, LOCK})]


def _provenance(profile: str) -> dict[str, object]:
    """The commit (and its uncommitted changes), the machine and the library versions of the run."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"profile": profile, "commit": git("rev-parse", "HEAD"),
            "uncommitted": git("status", "--porcelain", "--untracked-files=no", "--", ".",
                               f":(exclude)results/{profile}").splitlines(),  # not its own copy
            "device": f"cpu: {cpu_name()}", "python": platform.python_version(), "torch": torch.__version__}


def copy(profile: str, results: Path, source: Path | None = None,
         lock: Path = ROOT / "dvc.lock") -> list[str]:
    """Replace ``results`` with the recorded outputs in ``source`` (``reports/<profile>/``); nothing
    is copied, and the differences are returned, unless every one matches ``dvc.lock``."""
    source = source or ROOT / "reports" / profile
    want = recorded(profile, lock)
    if not want:
        return differences(profile, source, lock)
    if bad := _stale(want, source):  # a stray file in source is left behind, not refused
        return bad
    if results.exists():
        shutil.rmtree(results)
    for rel in want:
        (results / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, results / rel)
    (results / PROVENANCE).write_text(json.dumps(_provenance(profile), indent=2, sort_keys=True) + "\n")
    return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="digits")
    ap.add_argument("--check", action="store_true", help="compare results/<profile>/ with dvc.lock")
    args = ap.parse_args(argv)
    results = ROOT / "results" / args.profile
    if not args.check:
        if bad := copy(args.profile, results):
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            print(f"reports/{args.profile}/ does not match dvc.lock, run `dvc repro` first: "
                  + "; ".join(bad[:3]) + more, file=sys.stderr)
            return 2
        print(f"results/{args.profile}/: {len(recorded(args.profile))} files, as dvc.lock records them")
        return 0
    problems = differences(args.profile, results)
    for p in problems:
        print(f"results/{args.profile}/{p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
