"""Progress lines where no terminal is attached, and stage logs that ``tail -f`` can follow."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

from repurify.progress import Lines, progress
from stages._cli import _Tee, _tee_to


def test_without_a_terminal_each_interval_gets_a_line_with_an_eta(capsys: pytest.CaptureFixture) -> None:
    bar = progress(range(3), "white-box attacks", "attack")
    assert isinstance(bar, Lines)  # pytest's captured stderr is no terminal
    bar.interval = 0
    for i in bar:
        bar.set_postfix(loss=f"{i / 10:.1f}")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"white-box attacks: 2/3 attack, 0:00:00 elapsed, ETA 0:00:00, loss 0\.1", lines[1])


def test_only_the_interval_and_the_last_item_print(capsys: pytest.CaptureFixture) -> None:
    for _ in Lines(range(50), "epochs", "epoch", interval=3600):
        pass
    assert capsys.readouterr().err.splitlines() == ["epochs: 50/50 epoch, 0:00:00 elapsed, ETA 0:00:00"]


def test_the_log_gets_whole_lines_at_once_without_bar_frames(tmp_path: Path) -> None:
    log_file = tmp_path / "stage.log"
    with open(log_file, "w", encoding="utf-8") as log:
        tee = _Tee(io.StringIO(), log)
        tee.write("epoch 1\n")
        assert log_file.read_text() == "epoch 1\n"  # on disk before the stage ends: tail -f sees it
        tee.write(" 10%|#\r 50%|#####\r100%|##########")
        tee.write("\nhalf a li")
        assert log_file.read_text() == "epoch 1\n100%|##########\n"
        tee.close_line()
    assert log_file.read_text() == "epoch 1\n100%|##########\nhalf a li\n"


def test_the_stage_log_keeps_what_the_stage_printed(tmp_path: Path) -> None:
    with _tee_to(str(tmp_path / "logs" / "s.log")):
        print("evaluate_hgd: done")
        print("no newline", end="", file=sys.stderr)
    assert (tmp_path / "logs" / "s.log").read_text() == "evaluate_hgd: done\nno newline\n"
