"""``wanlora caption`` on the CPU with a tiny random Qwen2.5-VL: the path, not the quality.

Random weights write gibberish, so these tests assert what a user relies on: which files get a caption,
that an existing caption is never replaced (unless --overwrite), that character captions start with the
trigger and the class whatever the model wrote, that unreadable clips are named and skipped, that Ctrl-C
keeps what was written, that frames are sampled at each clip's real frame rate, and the prompt per recipe.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from wanlora.engine.caption import prompts, run, sampling, vlm
from wanlora.engine.data.captions import training_caption
from wanlora.tui.cli import main

from tests.engine.caption.conftest import uncaptioned


# ------------------------------------------------------------------ prompts per recipe
def test_each_recipe_asks_for_the_guides_caption_shape() -> None:
    motion = prompts.instruction("motion")
    assert "camera move" in motion and "orbit 360 around the subject" in motion and "action" in motion
    style = prompts.instruction("style")
    assert "only the look" in style and "Do not describe the people" in style and "16mm" in style
    char = prompts.instruction("character", "video", "frung", "young woman")
    assert char.count("frung, young woman") == 2  # asked to start with it, and shown in the example
    assert "this video clip" in char and "this image" in prompts.instruction("character", "image", "", "man")
    assert "[trigger], man" in prompts.instruction("character", "video", "", "man")  # no trigger word: the token
    with pytest.raises(prompts.PromptError, match="--class"):
        prompts.instruction("character", "video", "frung", "")
    with pytest.raises(prompts.PromptError, match="motion, style, character"):
        prompts.instruction("portrait")


@pytest.mark.parametrize("raw, expected", [
    ("The video shows frung, a young woman, walking in the rain.", "frung, young woman, walking in the rain"),
    ("young woman dancing", "frung, young woman, dancing"),
    ("[trigger], young woman, sitting", "frung, young woman, sitting"),
    ("Caption: **a man** waves at frung", "frung, young woman, a man waves at"),
    ("", "frung, young woman"),
])
def test_character_captions_always_start_with_trigger_and_class(raw: str, expected: str) -> None:
    assert prompts.finish(raw, "character", "frung", "young woman") == expected


def test_without_a_trigger_word_the_token_is_written_and_replaced_at_load() -> None:
    text = prompts.finish("garbled words here", "character", "", "man")
    assert text == "[trigger], man, garbled words here"
    # the dataset code (captions.training_caption) substitutes the job's trigger word at load
    assert training_caption(text, "sks") == "sks, man, garbled words here"


def test_other_recipes_are_cleaned_to_one_line_only() -> None:
    assert prompts.finish('"Orbit 360 around the subject, a man jumps."\n\nSecond paragraph', "motion") == \
        "Orbit 360 around the subject, a man jumps"
    long = " ".join(["word"] * 200)
    assert len(prompts.finish(long, "style").split()) == prompts.MAX_WORDS


# ------------------------------------------------------------------ frames at the clip's real fps
@pytest.mark.parametrize("n, fps, count, step", [
    (300, 30.0, 20, 15),  # 10 s at 30 fps: 2 frames per real second → every 15th frame
    (120, 24.0, 10, 12),  # 5 s at 24 fps → every 12th
    (80, 8.0, 20, 4),  # 10 s at 8 fps → every 4th
])
def test_frames_are_taken_at_two_per_real_second(n: int, fps: float, count: int, step: int) -> None:
    idx = sampling.frame_indices(n, fps)
    assert len(idx) == count
    assert list(idx) == [k * step for k in range(count)]


def test_long_clips_are_spread_over_their_whole_length_and_short_ones_get_the_minimum() -> None:
    idx = sampling.frame_indices(2400, 24.0)  # 100 s: 200 frames at 2 fps would exceed the cap
    assert len(idx) == sampling.MAX_FRAMES and idx[0] == 0 and idx[-1] == 2399
    short = sampling.frame_indices(10, 24.0)  # 0.4 s
    assert len(short) == sampling.MIN_FRAMES and short[-1] == 9
    assert sampling.frame_indices(1, 24.0) == (0, 0)  # one frame shown as a pair


def test_decoded_frames_follow_each_clips_own_frame_rate(tmp_path: Path) -> None:
    """Two real clips of 3 s, at 8 and at 24 fps: the same number of frames, 3x apart in the source."""
    from wanlora.engine.data.synthetic import write_clips

    slow = write_clips(tmp_path / "a", n=1, num_frames=24, fps=8.0, captions=False)[0]
    fast = write_clips(tmp_path / "b", n=1, num_frames=72, fps=24.0, captions=False)[0]
    a, b = sampling.load_frames(slow), sampling.load_frames(fast)
    assert a.indices == (0, 4, 8, 12, 16, 20) and b.indices == (0, 12, 24, 36, 48, 60)
    assert a.sampled_fps == pytest.approx(2.0) and b.sampled_fps == pytest.approx(2.0)
    assert a.pixels.shape == (6, 56, 56, 3) and a.pixels.dtype == np.uint8  # 64² → 56² (a 28-px multiple)


def test_patchify_matches_a_patch_by_patch_loop() -> None:
    """Qwen's patch order, computed independently: for each temporal pair, each 2×2 merge window, each patch."""
    lay = vlm.VisionLayout()
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, size=(3, 56, 84, 3), dtype=np.uint8)  # odd frame count: last frame repeats
    flat, grid = vlm.patchify(px, lay)
    assert grid == (2, 4, 6)
    norm = (px.astype(np.float32) / 255 - np.array(lay.mean, np.float32)) / np.array(lay.std, np.float32)
    norm = np.concatenate([norm, norm[-1:]])
    rows = []
    for t in range(2):
        for bh in range(2):
            for bw in range(3):
                for mh in range(2):
                    for mw in range(2):
                        h0, w0 = (bh * 2 + mh) * 14, (bw * 2 + mw) * 14
                        patch = norm[2 * t:2 * t + 2, h0:h0 + 14, w0:w0 + 14, :]  # tp, p, p, C
                        rows.append(patch.transpose(3, 0, 1, 2).reshape(-1))  # C, tp, p, p
    np.testing.assert_allclose(flat, np.stack(rows), rtol=0, atol=1e-6)  # same float32 ops, only reordered


# ------------------------------------------------------------------ the folder, through the CLI
def test_caption_writes_missing_keeps_existing_and_skips_unreadable(tiny_vl: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image
    from wanlora.engine.data.synthetic import write_bad_files

    folder = uncaptioned(tmp_path / "clips", n=3)
    Image.new("RGB", (80, 48), (200, 30, 30)).save(folder / "still.png")
    mine = folder / "clip_001.txt"
    mine.write_text("orbit 360 around the subject\n")
    os.utime(mine, (1_000_000, 1_000_000))
    bad = write_bad_files(folder)

    code = main(["caption", str(folder), "--model", str(tiny_vl), "--trigger", "frung", "--class", "young woman"])
    out, err = capsys.readouterr()
    assert code == 0, err
    written = {p.name: p.read_text() for p in folder.glob("*.txt") if p != mine}
    assert set(written) == {"clip_000.txt", "clip_002.txt", "still.txt"}
    assert all(t.startswith("frung, young woman") and t.endswith("\n") for t in written.values()), written
    assert mine.read_text() == "orbit 360 around the subject\n" and mine.stat().st_mtime == 1_000_000
    for p in bad:  # named with the reason, no caption file, and the others were still captioned
        assert p.name in err and not p.with_suffix(".txt").exists()
    assert "[####################] 3/3" in out and "3 caption(s) written" in out
    assert not list(folder.glob(".*.tmp"))

    # run again: nothing left to do; existing captions (ours and the user's) untouched
    before = {p.name: p.read_text() for p in folder.glob("*.txt")}
    assert main(["caption", str(folder), "--model", str(tiny_vl), "--class", "young woman"]) == 0
    out, err = capsys.readouterr()
    assert "nothing to caption" in out and "2 unreadable file(s) skipped" in out and "loading" not in out
    assert {p.name: p.read_text() for p in folder.glob("*.txt")} == before

    # --dry-run prints and writes nothing; --overwrite replaces, here as motion captions
    assert main(["caption", str(folder), "--model", str(tiny_vl), "--recipe", "motion", "--overwrite",
                 "--dry-run"]) == 0
    assert "dry run: 4 caption(s) printed" in capsys.readouterr().out
    assert {p.name: p.read_text() for p in folder.glob("*.txt")} == before
    assert main(["caption", str(folder), "--model", str(tiny_vl), "--recipe", "motion", "--overwrite"]) == 0
    assert mine.read_text() != "orbit 360 around the subject\n"
    assert not mine.read_text().startswith("frung, young woman")


def test_a_caption_created_during_the_run_is_never_replaced(tmp_path: Path) -> None:
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    (tmp_path / "a.txt").write_text("typed by hand meanwhile\n")
    assert run.write_caption(clip, "the model's caption") is False
    assert (tmp_path / "a.txt").read_text() == "typed by hand meanwhile\n"
    assert run.write_caption(clip, "the model's caption", overwrite=True) is True
    assert (tmp_path / "a.txt").read_text() == "the model's caption\n"
    assert run.write_caption(tmp_path / "b.mp4", "x", caption_ext="caption") and (tmp_path / "b.caption").is_file()


def test_ctrl_c_keeps_what_was_written_and_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = uncaptioned(tmp_path / "clips", n=3)

    class Interrupted:
        max_pixels = sampling.MAX_PIXELS
        quantized, backend, device = False, "builtin", "cpu"
        calls = 0

        def caption(self, frames: sampling.Frames, prompt: str) -> str:
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return "pan left, a red square slides"

    monkeypatch.setattr(vlm, "load_captioner", lambda *a, **k: Interrupted())
    assert main(["caption", str(folder), "--model", "unused"]) == 130
    err = capsys.readouterr().err
    assert "1 caption(s) written are kept" in err and "caption the other 2" in err
    assert [p.name for p in folder.glob("*.txt")] == ["clip_000.txt"]
    assert (folder / "clip_000.txt").read_text() == "pan left, a red square slides\n"
    assert not list(folder.glob(".*"))  # no temp file left behind


def test_bad_options_and_models_are_refused_with_the_fix(tiny_vl: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = uncaptioned(tmp_path / "clips", n=1)
    assert main(["caption", str(folder), "--recipe", "character", "--model", str(tiny_vl)]) == 2
    assert "--class WORD" in capsys.readouterr().err
    assert main(["caption", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    not_vl = tmp_path / "not-a-vlm"
    not_vl.mkdir()
    (not_vl / "config.json").write_text('{"model_type": "t5"}')
    assert main(["caption", str(folder), "--model", str(not_vl)]) == 1
    assert "Qwen2.5-VL or Qwen3-VL" in capsys.readouterr().err


def test_scan_counts_uncaptioned_clips_and_prints_the_caption_command(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = uncaptioned(tmp_path / "clips", n=2)
    (folder / "clip_000.txt").write_text("[trigger], woman, walking\n")
    assert main(["scan", str(folder), "--preset", "character", "--trigger", "frung"]) in (0, 1)
    out = capsys.readouterr().out
    assert "1 file(s) have no .txt caption" in out
    assert f"wanlora caption {folder} --recipe character --trigger frung --class" in out
