"""`wanlora scan FOLDER` as a user runs it: table, unreadable files, recipe advice, speed warning, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wanlora.engine.data.synthetic import write_bad_files, write_clips
from wanlora.tui.cli import main


def test_scan_text_report(clip_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["scan", str(clip_folder), "--preset", "motion", "--num-frames", "9"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "clip_000.mp4" in out and "1.50" in out and "64x64" in out and "96x64" in out
    assert "empty.mp4: empty file" in out and "truncated.mp4" in out
    assert "7 usable (5 clips, 2 images)" in out
    assert "wants 10-30" in out  # motion recipe advice: too few clips
    # long_000: 2 s in 9 frames -> 3.56x, the 1.5 s clips -> 2.67x: all too fast at 9 frames
    assert "5 clip(s) are longer than 0.8 s" in out and 'frame_sampling = "fps"' in out
    assert "1 file(s) have no .txt caption" in out


def test_scan_json_and_speed_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_clips(tmp_path, n=2, num_frames=24, fps=16.0)  # 1.5 s
    write_clips(tmp_path, n=1, num_frames=96, fps=16.0, prefix="long")  # 6 s
    rc = main(["scan", str(tmp_path), "--json", "--num-frames", "41"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert data["usable"] == 3 and data["videos"] == 3 and data["unreadable"] == []
    assert [t["file"] for t in data["too_fast"]] == ["long_000.mp4"]  # 6 s * 16 / 41 = 2.34 > 1.5
    assert data["too_fast"][0]["speedup"] == pytest.approx(2.34, abs=0.01)
    assert {i["file"]: i["frames"] for i in data["items"]}["long_000.mp4"] == 96


def test_scan_character_recipe_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_clips(tmp_path, n=2, num_frames=8)
    main(["scan", str(tmp_path), "--json", "--preset", "character"])
    data = json.loads(capsys.readouterr().out)
    assert data["preset"]["clips_min"] == 10 and data["preset"]["clips_max"] == 40
    assert any("add 8 or more" in a for a in data["advice"])


def test_scan_only_bad_files_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bad_files(tmp_path)
    assert main(["scan", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "empty.mp4" in out and "No usable clip" in out


def test_scan_missing_folder_exits_1_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(tmp_path / "nope")]) == 1
    assert str(tmp_path / "nope") in capsys.readouterr().err
