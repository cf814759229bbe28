"""Which frames of a clip the captioner sees, at what size (index math is pure; decoding via decode.py).

Frames are taken at ``fps`` frames per second of the clip's *real* time (its own frame rate from the
container), as Qwen-VL was trained to see video (2 fps by default), between ``min_frames`` and
``max_frames`` and an even count (the vision encoder pairs frames).  A long clip gets ``max_frames`` spread
over its whole length, so its effective rate drops and the model is told the rate it really got.  Frames
are scaled in the decoder to a size whose sides are multiples of the encoder's 28-pixel unit and whose area
is at most ``max_pixels``, so the processor does not resize them again and a 4K clip is never held at 4K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from wanlora.engine.data.decode import media_kind, probe_video, read_image, read_video_frames
from wanlora.engine.data.frames import even_indices, fps_indices

CAPTION_FPS = 2.0  # Qwen2.5-VL's own video sampling rate
MIN_FRAMES = 4
MAX_FRAMES = 32
MAX_PIXELS = 336 * 588  # per frame: 252 visual tokens per frame pair at 28-px units (≈ 4k tokens for 32 frames)
MIN_PIXELS = 56 * 56
UNIT = 28  # patch 14 × spatial merge 2


@dataclass(frozen=True)
class Frames:
    """Frames for one clip: uint8 RGB [F, H, W, 3] plus what the processor needs to know about time."""

    pixels: np.ndarray
    kind: str  # "video" or "image"
    source_frames: int  # frames in the clip (1 for an image)
    source_fps: float  # the clip's real frame rate (0 for an image)
    indices: tuple[int, ...]  # which source frames were taken

    @property
    def sampled_fps(self) -> float:
        """Frames per second of real time the model sees (``len(indices) / duration``)."""
        if self.kind != "video" or self.source_fps <= 0 or self.source_frames <= 0:
            return CAPTION_FPS
        return len(self.indices) / self.source_frames * self.source_fps


def frame_count(num_source: int, source_fps: float, fps: float = CAPTION_FPS, min_frames: int = MIN_FRAMES,
                max_frames: int = MAX_FRAMES) -> int:
    """How many frames to sample: ``duration × fps`` clamped to [min, max] and to the clip, rounded down to
    an even count (at least 2; a 1-frame clip is shown as that frame twice)."""
    if num_source < 1:
        raise ValueError(f"num_source must be >= 1, got {num_source}")
    rate = source_fps if source_fps and source_fps > 0 and math.isfinite(source_fps) else 16.0
    want = math.floor(num_source / rate * fps)
    n = min(max(want, min_frames), max_frames, num_source)
    return max(2, n - n % 2)


def frame_indices(num_source: int, source_fps: float, fps: float = CAPTION_FPS, min_frames: int = MIN_FRAMES,
                  max_frames: int = MAX_FRAMES) -> tuple[int, ...]:
    """Source frame indices: ``fps`` frames per real second from the first frame, or spread evenly over the
    whole clip when that would not cover it within ``max_frames`` (or the clip is shorter than ``min_frames``
    at ``fps``)."""
    n = frame_count(num_source, source_fps, fps, min_frames, max_frames)
    rate = source_fps if source_fps and source_fps > 0 and math.isfinite(source_fps) else 16.0
    fits = math.floor(num_source / rate * fps) <= max_frames and (n - 1) * rate / fps <= num_source - 1
    if fits:
        return fps_indices(num_source, rate, n, target_fps=fps, start=0.0).indices
    return even_indices(num_source, n).indices


def frame_size(width: int, height: int, max_pixels: int = MAX_PIXELS, min_pixels: int = MIN_PIXELS,
               unit: int = UNIT) -> tuple[int, int]:
    """(width, height) with both sides multiples of ``unit``, the aspect ratio kept, the area within
    [min_pixels, max_pixels] (Qwen-VL's ``smart_resize`` rule, so its processor leaves the frames as they are)."""
    if width < 1 or height < 1:
        raise ValueError(f"bad frame size {width}x{height}")
    h = max(unit, round(height / unit) * unit)
    w = max(unit, round(width / unit) * unit)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(unit, math.floor(height / beta / unit) * unit)
        w = max(unit, math.floor(width / beta / unit) * unit)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / unit) * unit
        w = math.ceil(width * beta / unit) * unit
    return w, h


def load_frames(path: str | Path, fps: float = CAPTION_FPS, max_frames: int = MAX_FRAMES,
                max_pixels: int = MAX_PIXELS) -> Frames:
    """Decode what the captioner sees of one clip or image (raises decode.MediaError when it cannot)."""
    path = Path(path)
    kind = media_kind(path)
    if kind is None:
        raise ValueError(f"{path}: not a clip or image")
    if kind == "image":
        first = read_image(path)
        w, h = frame_size(first.shape[1], first.shape[0], max_pixels)
        img = read_image(path, (w, h))
        return Frames(np.stack([img, img]), "image", 1, 0.0, (0, 0))
    meta = probe_video(path, check_last=False)
    w, h = frame_size(meta.width, meta.height, max_pixels)
    idx = frame_indices(meta.frames, meta.fps, fps, MIN_FRAMES, max_frames)
    pixels = read_video_frames(path, list(idx), size=(w, h))
    return Frames(pixels, "video", meta.frames, float(meta.fps), tuple(idx))
