"""Which source frames become a training clip (pure index math, no decoding, no torch).

Two ways, as in the job's ``frame_sampling``:

- ``even``: ``num_frames`` indices spread over the *whole* clip (the guide's / ai-toolkit's
  ``shrink_video_to_frames``).  Any clip length works, but a long clip is squeezed: a 10 s clip in 41 frames
  played back at 16 fps lasts 2.6 s, so the learned motion runs ~4x too fast (ai-toolkit issue #421).
  :func:`even_speedup` measures that squeeze.
- ``fps``: ``num_frames`` consecutive frames resampled to 16 fps (step = source_fps / 16 source frames,
  rounded), starting at an offset that fits.  Real speed is kept; only part of a long clip is seen per
  sample, and a random offset per sample covers the rest over the epochs.

Both return a :class:`FrameSelection` whose ``note`` says when something had to give (frames repeated,
a clip too short for ``fps`` sampling), so callers can warn once per clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

TARGET_FPS = 16.0  # Wan 2.2 I2V A14B generates 16 fps video
SPEEDUP_WARN = 1.5  # SPEC §4: warn when even sampling plays motion >1.5x too fast


class RandomLike(Protocol):
    """``random.Random`` or ``numpy.random.Generator``: anything with ``random() -> float in [0, 1)``."""

    def random(self) -> float: ...


@dataclass(frozen=True)
class FrameSelection:
    indices: tuple[int, ...]
    note: str | None = None  # set when frames repeat or the method had to fall back


def _round_half_up(x: float) -> int:
    # Python's round() is banker's rounding (2.5 -> 2); frame math wants 1.5, 3.0, 4.5 -> 2, 3, 5
    return int(math.floor(x + 0.5))


def even_indices(num_source: int, num_frames: int) -> FrameSelection:
    """``num_frames`` indices from first to last frame, evenly spaced (rounded to the nearest frame).

    With fewer source frames than needed, frames repeat (the clip plays in slow motion) and the note says so.
    """
    if num_source < 1 or num_frames < 1:
        raise ValueError(f"need num_source >= 1 and num_frames >= 1, got {num_source}, {num_frames}")
    if num_frames == 1:
        return FrameSelection((0,))
    step = (num_source - 1) / (num_frames - 1)
    idx = tuple(min(num_source - 1, _round_half_up(k * step)) for k in range(num_frames))
    note = None
    if num_source < num_frames:
        note = (
            f"clip has {num_source} frames but {num_frames} are needed: "
            f"{num_frames - len(set(idx))} frames repeated (motion plays slower)"
        )
    return FrameSelection(idx, note)


def fps_span(num_frames: int, source_fps: float, target_fps: float = TARGET_FPS) -> float:
    """Source frames covered from the first to the last sampled frame in ``fps`` mode."""
    return (num_frames - 1) * source_fps / target_fps


def fps_indices(
    num_source: int,
    source_fps: float,
    num_frames: int,
    target_fps: float = TARGET_FPS,
    start: float | None = None,
    rng: RandomLike | None = None,
) -> FrameSelection:
    """``num_frames`` frames at ``target_fps``: source index ``round(start + k * source_fps / target_fps)``.

    ``start``: first source frame (clamped to what fits); else drawn uniformly over the fitting offsets with
    ``rng``; else 0.  A clip shorter than ``num_frames`` at 16 fps falls back to :func:`even_indices` over the
    whole clip (slower motion, never faster) with a note.  An unknown fps (0) is taken as ``target_fps``.
    """
    if num_source < 1 or num_frames < 1:
        raise ValueError(f"need num_source >= 1 and num_frames >= 1, got {num_source}, {num_frames}")
    note = None
    if not source_fps or source_fps <= 0 or not math.isfinite(source_fps):
        source_fps = target_fps
        note = f"unknown frame rate, taken as {target_fps:g} fps"
    step = source_fps / target_fps
    span = fps_span(num_frames, source_fps, target_fps)
    last_start = (num_source - 1) - span  # largest start whose last frame still exists
    if last_start < -1e-9:
        sel = even_indices(num_source, num_frames)
        short = (
            f"clip has {num_source} frames at {source_fps:g} fps ({num_source / source_fps:.2f} s) but "
            f"{num_frames} frames at {target_fps:g} fps need {span + 1:.0f} source frames: "
            "spread over the whole clip instead (motion plays slower)"
        )
        return FrameSelection(sel.indices, short)
    max_start = math.floor(last_start + 1e-9)
    if start is None:
        start = float(min(max_start, int(rng.random() * (max_start + 1)))) if rng is not None else 0.0
    start = min(max(0.0, float(start)), last_start)
    idx = tuple(min(num_source - 1, _round_half_up(start + k * step)) for k in range(num_frames))
    return FrameSelection(idx, note)


def sample_indices(
    method: Literal["even", "fps"],
    num_source: int,
    source_fps: float,
    num_frames: int,
    rng: RandomLike | None = None,
) -> FrameSelection:
    """Dispatch on the job's ``frame_sampling``."""
    if method == "even":
        return even_indices(num_source, num_frames)
    if method == "fps":
        return fps_indices(num_source, source_fps, num_frames, rng=rng)
    raise ValueError(f"frame_sampling must be 'even' or 'fps', got {method!r}")


def even_speedup(duration_s: float, num_frames: int, target_fps: float = TARGET_FPS) -> float:
    """How much faster than real a clip plays after ``even`` sampling: duration × 16 / num_frames.

    1.0 = real speed; above :data:`SPEEDUP_WARN` the learned motion will look too fast (suggest
    ``frame_sampling = "fps"`` or trimming the clip).  Below 1 the motion plays slower.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    return duration_s * target_fps / num_frames


def max_even_duration(num_frames: int, target_fps: float = TARGET_FPS, limit: float = SPEEDUP_WARN) -> float:
    """Longest clip (seconds) that ``even`` sampling squeezes by no more than ``limit`` (trim advice)."""
    return limit * num_frames / target_fps


def fps_windows(
    num_source: int, source_fps: float, num_frames: int, target_fps: float = TARGET_FPS
) -> list[FrameSelection]:
    """The fixed ``fps`` windows used when latents are cached: non-overlapping, spread from clip start to end.

    A random start per epoch would need one cached latent per possible start (hundreds per clip); instead
    the clip is tiled with ``n = num_source // (span + 1)`` windows (at least one) whose starts run evenly
    from 0 to the last start that fits, and each sample draws one of them.  The whole clip is still seen,
    the cache holds about one encoded copy of it, and every window is an exact 16 fps run of frames.
    """
    if not source_fps or source_fps <= 0 or not math.isfinite(source_fps):
        source_fps = target_fps
    span = fps_span(num_frames, source_fps, target_fps)
    last_start = (num_source - 1) - span
    if last_start < -1e-9:
        return [fps_indices(num_source, source_fps, num_frames, target_fps)]  # too short: the even fallback
    n = max(1, int(num_source // (span + 1)))
    starts = [0.0] if n == 1 else [math.floor(k * last_start / (n - 1) + 1e-9) for k in range(n)]
    return [fps_indices(num_source, source_fps, num_frames, target_fps, start=s) for s in starts]


def pick_window(windows: list[FrameSelection], u: float) -> FrameSelection:
    """Window ``floor(u·n)`` of ``windows`` for a uniform draw ``u`` in [0, 1)."""
    return windows[min(len(windows) - 1, int(u * len(windows)))]
