"""Atomic file output and checked loading.

A killed stage must leave no half-written output: everything is written to a
temporary file beside the target and renamed into place.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from repurify.errors import CheckpointError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# what open() and mkdir() would give (0644 and 0755 under the usual umask), not mkstemp's 0600
FILE_MODE, DIR_MODE = 0o666 & ~_umask(), 0o777 & ~_umask()


def _clear_debris(target: Path) -> None:
    """Remove what a killed earlier write of ``target`` left (its ``.<name>.*.tmp`` siblings):
    one stage at a time writes a given output, so any such sibling is stale."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    _clear_debris(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(FILE_MODE)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces the folder ``target`` only if the block succeeds."""
    target = Path(target)
    _clear_debris(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(DIR_MODE)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically, byte-identical for equal ``obj``.

    Saving through an open file (not its name) keeps the temporary file's random name out of
    the archive, so equal tensors give equal checksums; nothing is buffered in memory.
    """
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        torch.save(obj, fh)


def load_torch(path: str | Path, produced_by: str, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with an actionable error for missing/corrupt files;
    ``mmap``: the tensors map the file, and only the pages read come into memory."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; run the `{produced_by}` stage first")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols, for a file we refuse
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several types for truncated/garbled files
        # torch's own text advises loading with weights_only=False, which would run whatever code
        # the file holds: never quote it
        reason = ("it holds what a safe load refuses" if "weights_only" in str(exc)
                  else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        raise CheckpointError(
            f"{path}: cannot be loaded ({reason}); the file is corrupt or not a repurify output: "
            f"delete it and rerun the `{produced_by}` stage"
        ) from None


def load_json(path: str | Path, produced_by: str) -> Any:
    """Read a stage's JSON output with the same actionable errors as :func:`load_torch`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; run the `{produced_by}` stage first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({str(exc)[:200]}); delete it and rerun the "
                              f"`{produced_by}` stage") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
