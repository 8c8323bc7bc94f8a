"""Atomic writes leave no partial output; checked loading names the file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from repurify.errors import CheckpointError
from repurify.io import atomic_dir, atomic_path, load_torch, save_torch, sha256_file, write_json


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_killed_writes_debris_goes_at_the_next_write(tmp_path: Path) -> None:
    """kill -9 skips the cleanup; the next write of the same output removes what it left."""
    (tmp_path / ".transfer.k2j9.tmp" / "hgd").mkdir(parents=True)
    (tmp_path / ".summary.json.x1.tmp").write_text("half")
    (tmp_path / ".other.json.x1.tmp").write_text("not ours")
    with atomic_dir(tmp_path / "transfer") as tmp:
        (tmp / "rows.json").write_text("{}")
    write_json(tmp_path / "summary.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.x1.tmp", "summary.json", "transfer"]


def test_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"\x00" * 10)
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_torch_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    f = tmp_path / "x.pt"
    save_torch(f, {"w": torch.arange(4)})
    assert torch.equal(load_torch(f, "stage")["w"], torch.arange(4))
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(CheckpointError, match=r"x\.pt: cannot be loaded.*rerun the `stage` stage"):
        load_torch(f, "stage")
    with pytest.raises(CheckpointError, match=r"missing\.pt: not found; run the `stage` stage"):
        load_torch(tmp_path / "missing.pt", "stage")


@pytest.mark.parametrize("content", [b"garbage" * 10, pickle.dumps({"a": object})])
def test_an_unloadable_file_never_gets_torchs_unsafe_advice(tmp_path: Path, content: bytes) -> None:
    """torch's error says to retry with weights_only=False, which would run the file's code."""
    f = tmp_path / "dataset.pt"
    f.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_torch(f, "fetch_data")
    assert "weights_only" not in str(err.value)
    assert "delete it and rerun the `fetch_data` stage" in str(err.value)


def test_sha256(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_bytes(b"abc")
    assert sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_equal_objects_give_identical_files(tmp_path: Path) -> None:
    obj = {"x": torch.arange(10, dtype=torch.uint8), "name": "digits"}
    save_torch(tmp_path / "a.pt", obj)
    save_torch(tmp_path / "b.pt", obj)
    assert sha256_file(tmp_path / "a.pt") == sha256_file(tmp_path / "b.pt")


def test_outputs_get_the_modes_open_and_mkdir_would_give(tmp_path: Path) -> None:
    from repurify.io import DIR_MODE, FILE_MODE, atomic_dir

    (tmp_path / "plain").write_text("x")
    (tmp_path / "plain_dir").mkdir()
    write_json(tmp_path / "m.json", {"a": 1})
    with atomic_dir(tmp_path / "out") as out:
        (out / "f").write_text("x")
    def mode(name: str) -> int:
        return (tmp_path / name).stat().st_mode & 0o777

    assert mode("m.json") == FILE_MODE == mode("plain")
    assert mode("out") == DIR_MODE == mode("plain_dir")
