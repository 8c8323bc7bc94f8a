"""Assertions several test modules share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from repurify.errors import CheckpointError


def assert_refuses_bad_files(load: Callable[[Path], Any], truncated: Path, stage: str) -> None:
    """``load`` names the file (and ``stage`` to rerun) for a truncated, a garbage and a
    missing file."""
    with pytest.raises(CheckpointError, match="cannot be loaded") as err:
        load(truncated)
    assert str(truncated) in str(err.value) and stage in str(err.value)
    junk = truncated.parent / "junk.pt"
    junk.write_bytes(b"\x00definitely not a torch file\xff")
    with pytest.raises(CheckpointError) as err:
        load(junk)
    assert str(junk) in str(err.value)
    absent = truncated.parent / "absent.pt"
    with pytest.raises(CheckpointError, match="not found") as err:
        load(absent)
    assert str(absent) in str(err.value)
