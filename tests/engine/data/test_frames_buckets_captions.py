"""Pure index/bucket/caption math, checked against numbers a user can verify by hand."""

from __future__ import annotations

import random

import pytest
from wanlora.engine.data.buckets import bucket_for, bucket_sizes, crop_plan
from wanlora.engine.data.captions import caption_dropout, caption_for, final_caption, substitute_trigger
from wanlora.engine.data.frames import (
    even_indices,
    even_speedup,
    fps_indices,
    max_even_duration,
    sample_indices,
)

# ---- frames ---------------------------------------------------------------------------------------


def test_fps_sampling_of_24fps_clip_is_1_5_frames_apart() -> None:
    sel = fps_indices(num_source=240, source_fps=24.0, num_frames=9, start=0)
    assert sel.indices == (0, 2, 3, 5, 6, 8, 9, 11, 12)  # 0, 1.5, 3, 4.5 ... rounded half up
    gaps = [b - a for a, b in zip(sel.indices, sel.indices[1:], strict=False)]
    assert sum(gaps) / len(gaps) == pytest.approx(1.5)
    assert sel.note is None


def test_fps_sampling_same_rate_is_consecutive_and_high_rate_skips() -> None:
    assert fps_indices(100, 16.0, 5, start=10).indices == (10, 11, 12, 13, 14)
    assert fps_indices(100, 32.0, 5, start=0).indices == (0, 2, 4, 6, 8)


def test_fps_random_offset_fits_and_varies() -> None:
    rng = random.Random(0)
    starts = set()
    for _ in range(200):
        sel = fps_indices(48, 24.0, 9, rng=rng)
        assert sel.indices[-1] <= 47 and sel.indices[0] >= 0
        assert sel.indices[-1] - sel.indices[0] == 12  # span of 8 steps of 1.5
        starts.add(sel.indices[0])
    assert starts == set(range(0, 36))  # every start that fits: 47 - 12 = 35


def test_fps_start_is_clamped_to_what_fits() -> None:
    assert fps_indices(48, 24.0, 9, start=1000).indices[-1] == 47


def test_fps_clip_too_short_falls_back_to_whole_clip_with_note() -> None:
    sel = fps_indices(20, 24.0, 17)  # needs 25 source frames
    assert len(sel.indices) == 17 and sel.indices[0] == 0 and sel.indices[-1] == 19
    assert sel.note and "20 frames" in sel.note and "slower" in sel.note


def test_fps_unknown_rate_is_taken_as_16() -> None:
    sel = fps_indices(30, 0.0, 5)
    assert sel.indices == (0, 1, 2, 3, 4) and "unknown frame rate" in sel.note


def test_even_spreads_over_whole_clip() -> None:
    sel = even_indices(241, 41)
    assert sel.indices[0] == 0 and sel.indices[-1] == 240
    assert all(b - a == 6 for a, b in zip(sel.indices, sel.indices[1:], strict=False))
    assert len(set(even_indices(1000, 41).indices)) == 41
    assert even_indices(1000, 1).indices == (0,)


def test_even_short_clip_repeats_and_says_so() -> None:
    sel = even_indices(5, 9)
    assert sel.indices == (0, 1, 1, 2, 2, 3, 3, 4, 4)
    assert "repeated" in sel.note
    assert even_indices(9, 9).note is None


def test_sample_indices_dispatch_and_bad_method() -> None:
    assert sample_indices("even", 10, 16.0, 10).indices == tuple(range(10))
    with pytest.raises(ValueError, match="frame_sampling"):
        sample_indices("random", 10, 16.0, 10)  # type: ignore[arg-type]


def test_even_speedup_matches_spec_example() -> None:
    assert even_speedup(10.0, 41) == pytest.approx(3.90, abs=0.01)  # 10 s into 41 frames: ~4x too fast
    assert even_speedup(41 / 16, 41) == pytest.approx(1.0)
    assert max_even_duration(41) == pytest.approx(3.84375)


# ---- buckets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("res", [64, 256, 512, 768, 1024])
def test_buckets_are_multiples_of_16_with_area_near_res2(res: int) -> None:
    sizes = bucket_sizes(res)
    assert (res, res) in sizes
    for w, h in sizes:
        assert w % 16 == 0 and h % 16 == 0
        assert abs(w * h - res * res) <= 0.1 * res * res
        assert 1 / 2.5 <= w / h <= 2.5


def test_bucket_picks_nearest_aspect() -> None:
    assert bucket_for(1920, 1080, 768) == (1024, 576)  # exact 16:9
    w, h = bucket_for(1920, 1080, 512)
    assert abs(w / h - 16 / 9) < 0.03
    assert bucket_for(1080, 1920, 512) == (h, w)  # portrait mirrors landscape
    assert bucket_for(64, 64, 512) == (512, 512)
    assert bucket_for(5000, 100, 512) == max(bucket_sizes(512), key=lambda wh: wh[0] / wh[1])


def test_bucket_rejects_bad_resolution() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        bucket_sizes(500)


def test_crop_plan_covers_then_centre_crops() -> None:
    p = crop_plan(1920, 1080, 672, 384)
    assert p.resize_w >= 672 and p.resize_h == 384
    assert p.left == (p.resize_w - 672) // 2 and p.top == 0
    q = crop_plan(100, 200, 64, 64)  # portrait into square: crop top and bottom
    assert (q.resize_w, q.resize_h, q.left, q.top) == (64, 128, 0, 32)


# ---- captions -------------------------------------------------------------------------------------


def test_caption_file_else_default(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("  orbit 360 \n")
    assert caption_for(tmp_path / "a.mp4", "txt", "fallback") == "orbit 360"
    assert caption_for(tmp_path / "b.mp4", "txt", "fallback") == "fallback"
    (tmp_path / "c.cap").write_text("other ext")
    assert caption_for(tmp_path / "c.png", "cap") == "other ext"


def test_trigger_substitution() -> None:
    assert substitute_trigger("[trigger], young woman", "frung") == "frung, young woman"
    assert substitute_trigger("a [TRIGGER] dog", "sks") == "a sks dog"
    assert substitute_trigger("[trigger], young woman", "") == "young woman"
    assert substitute_trigger("no token here", "x") == "no token here"


def test_caption_dropout_rate_and_determinism() -> None:
    a = [caption_dropout(0.1, random.Random(i)) for i in range(4000)]
    b = [caption_dropout(0.1, random.Random(i)) for i in range(4000)]
    assert a == b
    assert 0.08 < sum(a) / len(a) < 0.12
    assert not any(caption_dropout(0.0, random.Random(i)) for i in range(100))
    assert final_caption("[trigger] x", "t", dropped=True) == ""
    assert final_caption("[trigger] x", "t", dropped=False) == "t x"
