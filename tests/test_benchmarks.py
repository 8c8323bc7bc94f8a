"""The benchmark harness runs on tiny sizes (timings are reported, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.__main__ import main


def test_benchmark_command_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    assert main(["--profile", "smoke", "--batch", "3", "--network-steps", "1", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    oag = results["oag_batching"]
    assert oag["batch"] == 3 and oag["image_shape"] == [1, 16, 16]
    assert oag["speedup"] > 0 and oag["goal_speedup"] == 20
    assert oag["max_abs_difference"] < 1e-4  # the batch computes what the loop computes
    assert results["machine"]["cpu_cores"] >= 1
    assert "OAG batched / one-at-a-time" in (tmp_path / "results.md").read_text()
