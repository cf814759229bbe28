"""decord's own C++ log line ("…/video_reader.cc:83: ERROR opening: …") never reaches the user ahead of
wanlora's message about the same clip: not in `wanlora validate`'s output, not in train.log (issue #27 item 12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from wanlora.engine.data import decode
from wanlora.engine.data.synthetic import write_bad_files, write_clips

REPO = Path(__file__).resolve().parents[3]


def _corrupt(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "corrupt.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)  # a header, then nothing a demuxer can read
    return p


def test_opening_a_corrupt_clip_says_it_once_in_our_words(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bad = [_corrupt(tmp_path), *write_bad_files(tmp_path)]
    for p in bad:
        with pytest.raises(decode.MediaError, match=p.name):
            decode.probe_video(p)
    err = capfd.readouterr().err
    assert "video_reader.cc" not in err and "ERROR opening" not in err, err
    # fd 2 is back: what is written after goes where it always went
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_other_stderr_in_the_window_is_passed_on(capfd: pytest.CaptureFixture[str]) -> None:
    with decode._native_stderr_filtered():
        with decode._native_stderr_filtered():  # nested / overlapping users share one redirect
            os.write(2, b"[21:45:46] /github/workspace/src/video/video_reader.cc:83: ERROR opening: x.mp4\n")
        os.write(2, b"a warning from another thread\n")
    assert capfd.readouterr().err == "a warning from another thread\n"


def test_validate_output_has_no_native_decoder_line(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    write_clips(clips, n=10, num_frames=24, fps=16.0, caption="orbit")
    _corrupt(clips)
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "t"\npreset = "motion"\nvram_tier = 80\n[[datasets]]\nfolder = "{clips}"\n'
                   "num_frames = 21\n")
    r = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "validate", str(job)], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    out = r.stdout + r.stderr
    assert "corrupt.mp4" in r.stdout  # wanlora's own warning names it
    assert "video_reader.cc" not in out and "ERROR opening" not in out, out
