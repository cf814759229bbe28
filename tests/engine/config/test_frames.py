"""The 4n+1 frame rule is defined once (engine.config.frames); validation and the CLI's --frames use it."""

from __future__ import annotations

from wanlora.engine.config.frames import nearest_valid_frames, valid_frames, valid_frames_at_most


def test_valid_frames_are_one_and_every_fourth_count_after_it() -> None:
    expected = {1 + 4 * k for k in range(65)}  # 1, 5, 9, ... 257: Wan's VAE packs 4 frames per latent frame
    assert {n for n in range(-8, 258) if valid_frames(n)} == expected


def test_the_suggestions_are_valid_counts_next_to_n() -> None:
    for n in range(1, 120):
        below = valid_frames_at_most(n)
        assert valid_frames(below) and below <= n and n - below < 4
        for m in nearest_valid_frames(n):
            assert valid_frames(m) and abs(m - n) <= 2
    assert valid_frames_at_most(0) == 1 and valid_frames_at_most(-5) == 1


def test_the_cli_refuses_frames_that_break_the_rule() -> None:
    import argparse

    from wanlora.tui.commands import sample

    args = argparse.Namespace(loras=[], image=__file__, frames=-3, width=64, height=64)
    assert any("--frames must be 4n+1 (e.g. 1)" in p for p in sample._problems(args))
    args.frames = 43
    assert any("(e.g. 41)" in p for p in sample._problems(args))
    args.frames = 41
    assert not any("--frames" in p for p in sample._problems(args))
