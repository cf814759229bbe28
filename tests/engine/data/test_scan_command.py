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


def _stuck_on(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Reading these files never ends (as on a hung network mount); the scan's child processes inherit it."""
    import time

    from wanlora.engine.data import scan as scanning

    real = scanning.scan_file

    def scan_file(path, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(path).name in names:
            while True:
                time.sleep(3600)
        return real(path, *a, **kw)

    monkeypatch.setattr(scanning, "scan_file", scan_file)


def test_a_clip_that_never_finishes_reading_is_named_and_the_scan_goes_on(tmp_path: Path, monkeypatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import time

    write_clips(tmp_path, n=4, num_frames=24, fps=16.0)  # clip_000 .. clip_003
    _stuck_on(monkeypatch, "clip_001.mp4")
    t0 = time.monotonic()
    rc = main(["scan", str(tmp_path), "--json", "--timeout", "1.5"])
    took = time.monotonic() - t0
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and took < 20, took
    assert data["usable"] == 3, data
    assert [u["file"] for u in data["unreadable"]] == ["clip_001.mp4"]
    assert "did not finish within 1.5 s (--timeout)" in data["unreadable"][0]["error"]
    assert [i["file"] for i in data["items"]] == [f"clip_00{i}.mp4" for i in range(4)]  # folder order kept


def test_two_stuck_files_in_a_row_name_the_rest_without_waiting_on_each(tmp_path: Path, monkeypatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import time

    write_clips(tmp_path, n=6, num_frames=8, fps=16.0)
    _stuck_on(monkeypatch, "clip_001.mp4", "clip_002.mp4")
    t0 = time.monotonic()
    rc = main(["scan", str(tmp_path), "--timeout", "1"])
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    assert rc == 0 and took < 15, took  # two limits waited for, not five
    assert "clip_000.mp4" in out.split("unreadable")[0]  # read before the hang
    for name in ("clip_001.mp4", "clip_002.mp4"):
        assert f"{name}: reading it did not finish within 1 s" in out
    for name in ("clip_003.mp4", "clip_004.mp4", "clip_005.mp4"):
        assert f"{name}: not read: the two files before it did not finish within 1 s, the disk seems hung" in out
