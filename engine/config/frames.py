"""Wan's frame rule, defined once: a clip has 1 or 4n+1 frames (torch-free).

Wan 2.1/2.2's VAE keeps the first frame and packs every 4 after it into one latent frame, so other counts
are padded or cut.  Validation, the CLI's ``--frames`` checks and their suggestions all use these.
"""

from __future__ import annotations

FRAMES_PER_LATENT = 4


def valid_frames(n: int) -> bool:
    """``n`` is 1 or 4n+1 (and at least 1)."""
    return n >= 1 and (n - 1) % FRAMES_PER_LATENT == 0


def valid_frames_at_most(n: int) -> int:
    """The largest 1-or-4n+1 frame count not above ``n`` (1 at least)."""
    return max(1, ((n - 1) // FRAMES_PER_LATENT) * FRAMES_PER_LATENT + 1)


def nearest_valid_frames(n: int) -> list[int]:
    """The nearest 1-or-4n+1 frame count(s) to ``n`` (two when ``n`` sits exactly between them)."""
    lower = valid_frames_at_most(n)
    upper = lower + FRAMES_PER_LATENT
    if n - lower == upper - n:
        return [lower, upper]
    return [lower if n - lower < upper - n else upper]
