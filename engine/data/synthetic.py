"""Small real video clips with a learnable pattern, for tests, the demo and benchmarks.

Every clip is a red square moving right at a constant speed (wrapping around) over a smooth colour
gradient.  Clips differ in the square's start position, its row and the gradient's colours, so a model
can learn "a red square moving right" while the first frame (the I2V condition) still varies.  The
square's left edge in frame ``i`` is ``(x0 + i * speed) % width``: tests recover the sampled frame
indices from decoded pixels with :func:`square_x`.

Files are real H.264 mp4s by default (PyAV / libx264, yuv420p, single-threaded, constant QP, so the bytes
are identical for a seed; .mov/.mkv/.avi/.webm on request), with same-stem ``.txt`` captions beside them.
No torch here.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

SQUARE_RGB = (230, 30, 30)
DEFAULT_CAPTION = "[trigger] a red square moving right"


def speed_px(width: int) -> int:
    """Pixels the square moves per source frame (2 px at 64 wide): big enough to survive compression."""
    return max(1, width // 32)


def square_size(size: tuple[int, int]) -> int:
    return max(4, min(size) // 4)


def clip_params(index: int, size: tuple[int, int], seed: int = 0) -> dict:
    """Start position, row and gradient colours of clip ``index`` (deterministic for ``seed``)."""
    w, h = size
    rng = np.random.default_rng([seed, index])
    s = square_size(size)
    return {
        "x0": int(rng.integers(0, w)),
        "y0": int(rng.integers(0, max(1, h - s))),
        "top": rng.integers(0, 120, size=3).astype(np.float32),  # darkish gradient keeps red visible
        "bottom": rng.integers(0, 120, size=3).astype(np.float32),
    }


def render_frame(i: int, size: tuple[int, int], params: dict) -> np.ndarray:
    """Frame ``i`` as uint8 RGB [H, W, 3]."""
    w, h = size
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = (params["top"] * (1 - t) + params["bottom"] * t) * np.ones((1, w, 1), np.float32)
    s = square_size(size)
    x = (params["x0"] + i * speed_px(w)) % w
    cols = (np.arange(s) + x) % w  # wraps around the right edge
    img[params["y0"] : params["y0"] + s, cols] = SQUARE_RGB
    return img.astype(np.uint8)


def square_x(frame: np.ndarray) -> float:
    """Left edge of the red square in a decoded RGB frame (uint8 or float in [0,255]), wrap-aware.

    Used by tests to turn decoded pixels back into source frame indices.
    """
    f = np.asarray(frame, dtype=np.float32)
    red = (f[..., 0] > 150) & (f[..., 1] < 110) & (f[..., 2] < 110)
    counts = red.sum(axis=0)
    if not counts.any():
        raise ValueError("no red square in this frame")
    cols = counts >= 0.5 * counts.max()  # the square's full columns, not codec bleed around its edges
    w = cols.shape[0]
    xs = np.flatnonzero(cols)
    # the square's run may wrap: its left edge is the red column whose left neighbour is not red
    starts = [x for x in xs if not cols[(x - 1) % w]]
    return float(starts[0]) if starts else float(xs[0])


# Codec per container: H.264 where the container takes it, else what users meet there (VP9 in webm).
CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}
_OPTIONS = {
    # constant QP, no rate-control lookahead: libx264's crf/mbtree output varied ~1 run in 60 here
    "libx264": {"qp": "12", "preset": "veryfast", "x264-params": "threads=1:mbtree=0:rc-lookahead=0"},
    "mpeg4": {"qscale": "2"},
    "libvpx-vp9": {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "0"},
}


def _encode(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import av

    rate = Fraction(fps).limit_denominator(1001)
    h, w = frames[0].shape[:2]
    codec = CODECS.get(path.suffix.lower(), "libx264")
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = dict(_OPTIONS[codec])
        for k, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")
            frame.pts = k
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_clips(
    folder: str | Path,
    n: int = 4,
    num_frames: int = 24,
    size: tuple[int, int] = (64, 64),
    fps: float = 16.0,
    captions: bool = True,
    caption: str = DEFAULT_CAPTION,
    seed: int = 0,
    images: int = 0,
    prefix: str = "clip",
    ext: str = ".mp4",
) -> list[Path]:
    """Write ``n`` clips (``size`` = (width, height), both even) and ``images`` PNG stills.

    Returns the media paths (clips first, then images).  With ``captions`` a ``.txt`` with ``caption`` is
    written beside each file.  Names are ``{prefix}_{i:03d}{ext}`` and ``{prefix}_still_{i:03d}.png``;
    ``ext`` is one of .mp4 .mov .mkv (H.264), .avi (MPEG-4 part 2), .webm (VP9).
    """
    if ext.lower() not in CODECS:
        raise ValueError(f"ext {ext!r}: use one of {', '.join(CODECS)}")
    from PIL import Image

    w, h = size
    if w % 2 or h % 2:
        raise ValueError(f"size {size}: width and height must be even for yuv420p H.264")
    if num_frames < 1 or fps <= 0:
        raise ValueError("num_frames must be >= 1 and fps > 0")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for i in range(n):
        p = clip_params(i, size, seed)
        path = folder / f"{prefix}_{i:03d}{ext}"
        _encode(path, [render_frame(k, size, p) for k in range(num_frames)], fps)
        out.append(path)
    for j in range(images):
        p = clip_params(n + j, size, seed)
        path = folder / f"{prefix}_still_{j:03d}.png"
        Image.fromarray(render_frame(0, size, p)).save(path)
        out.append(path)
    if captions:
        for path in out:
            path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    return out


def write_bad_files(folder: str | Path) -> list[Path]:
    """A zero-byte ``empty.mp4`` and a ``truncated.mp4`` (first third of a real clip): both unreadable."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    tmp = folder / ".whole_tmp.mp4"
    _encode(tmp, [render_frame(k, (64, 64), clip_params(0, (64, 64))) for k in range(24)], 16.0)
    data = tmp.read_bytes()
    tmp.unlink()
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    return [empty, truncated]
