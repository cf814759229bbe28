"""Reading clips and images: the one place that talks to decord and PIL (torch-free).

decord's own errors are C++ log lines ("filter_graph.cc:61: Check failed ..."); here they become a
:class:`MediaError` that names the file and says what to do, so ``wanlora scan``, ``wanlora validate`` and
the trainer report an unreadable clip the same way and skip it instead of crashing.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from wanlora.engine.config.schema import IMAGE_EXTS, VIDEO_EXTS

FIX = "re-copy or re-export it (H.264 mp4 is safest), or remove it from the folder"


# What a broken file makes decord raise (DECORDError is a plain Exception); set on first use so importing
# this module stays cheap.  Anything else (TypeError ...) is a bug in our code and must not be reported
# as "unreadable clip".
_DECODE_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError)


class MediaError(Exception):
    """A clip or image that cannot be read.  ``reason`` is short, for tables; str() is the full message."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}; {FIX}")


@dataclass(frozen=True)
class VideoMeta:
    frames: int
    fps: float
    width: int
    height: int


def media_kind(path: str | Path) -> str | None:
    """'video', 'image' or None from the extension (case-insensitive)."""
    ext = Path(path).suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in IMAGE_EXTS:
        return "image"
    return None


def _quiet_decord():  # noqa: ANN202 - returns the decord module
    import decord
    from decord._ffi.base import DECORDError

    global _DECODE_ERRORS
    _DECODE_ERRORS = (DECORDError, RuntimeError, OSError)

    decord.logging.set_level(decord.logging.QUIET)  # we report errors ourselves, by file name
    return decord


# decord's C++ log lines ("[21:45:46] /…/video_reader.cc:83: ERROR opening: …"), which set_level(QUIET) does not
# stop: written straight to fd 2, ahead of our own message about the same file
_NATIVE_LINE = re.compile(rb"^\[\d\d:\d\d:\d\d\] \S+\.(cc|h|cpp):\d+: ")
_fd2_lock = threading.Lock()
_fd2_users = 0
_fd2_saved: int | None = None
_fd2_sink = None


@contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """fd 2 points at a temporary file while decord opens/probes a clip; when the last user leaves, fd 2 is
    restored and whatever else was written meanwhile is passed on, minus decord's own log lines.

    Process-wide (fd 2 is), so overlapping users (the dataset's decode threads) share one redirect, counted
    under a lock; another thread's stderr in that window is delayed, not lost.  Without a usable fd 2 (a
    daemon's closed stderr) nothing is redirected."""
    global _fd2_users, _fd2_saved, _fd2_sink
    with _fd2_lock:
        if _fd2_users == 0:
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            try:
                saved = os.dup(2)
            except OSError:
                saved = None
            if saved is not None:
                sink = tempfile.TemporaryFile()
                os.dup2(sink.fileno(), 2)
                _fd2_saved, _fd2_sink = saved, sink
        _fd2_users += 1
    try:
        yield
    finally:
        with _fd2_lock:
            _fd2_users -= 1
            if _fd2_users == 0 and _fd2_sink is not None:
                sink, saved = _fd2_sink, _fd2_saved
                _fd2_sink = _fd2_saved = None
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                kept = b"".join(ln for ln in sink.read().splitlines(keepends=True) if not _NATIVE_LINE.match(ln))
                sink.close()
                if kept:
                    os.write(2, kept)


def _reason(path: Path, err: Exception) -> str:
    msg = str(err)
    if "Error reading" in msg or "moov atom" in msg or "Invalid data" in msg:
        return "not a readable video (truncated copy, or not a video at all)"
    if "av_read_frame" in msg or "Check failed" in msg:
        return "video data is corrupt or cut short (truncated copy?)"
    last = msg.strip().splitlines()[-1] if msg.strip() else type(err).__name__
    return f"cannot be decoded ({last[:120]})"


def open_video(path: str | Path, size: tuple[int, int] | None = None):  # noqa: ANN201 - decord.VideoReader
    """A decord VideoReader on the CPU, or MediaError.  ``size`` = (width, height) scales in the decoder
    (ffmpeg's scaler), so a 1080p clip never exists at full size in memory when training at 512."""
    path = Path(path)
    try:
        nbytes = path.stat().st_size
    except OSError as e:
        raise MediaError(path, f"cannot be read ({e.strerror or e})") from None
    if nbytes == 0:
        raise MediaError(path, "empty file (0 bytes)")
    decord = _quiet_decord()
    try:
        w, h = size if size is not None else (-1, -1)
        with _native_stderr_filtered():  # our MediaError says it, by file name
            vr = decord.VideoReader(str(path), ctx=decord.cpu(0), width=w, height=h, num_threads=1)
    except _DECODE_ERRORS as e:  # decord raises DECORDError for any ffmpeg failure
        raise MediaError(path, _reason(path, e)) from None
    if len(vr) == 0:
        raise MediaError(path, "no video frames")
    return vr


def probe_video(path: str | Path, check_last: bool = True) -> VideoMeta:
    """Frame count, fps and size from the container index plus one decoded frame (not the whole clip).

    With ``check_last`` the last frame is decoded too, which catches the commonest breakage (a copy cut
    short) at the cost of decoding at most one group of pictures.
    """
    vr = open_video(path)
    try:
        with _native_stderr_filtered():
            n = len(vr)
            first = vr[0].asnumpy()
            if check_last and n > 1:
                vr[n - 1].asnumpy()
            fps = float(vr.get_avg_fps())
    except _DECODE_ERRORS as e:
        raise MediaError(path, _reason(Path(path), e)) from None
    return VideoMeta(frames=n, fps=fps, width=int(first.shape[1]), height=int(first.shape[0]))


def read_video_frames(
    path: str | Path, indices: list[int] | tuple[int, ...], size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode the given source frames: uint8 RGB [F, H, W, 3], scaled to ``size`` = (width, height) if given.

    Indices may repeat and need not be sorted; each distinct frame is decoded once.
    """
    vr = open_video(path, size)
    n = len(vr)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise ValueError(f"{path}: frame indices {bad[:5]} outside 0..{n - 1}")
    uniq = sorted(set(indices))
    try:
        batch = vr.get_batch(uniq).asnumpy()
    except _DECODE_ERRORS as e:
        raise MediaError(path, _reason(Path(path), e)) from None
    pos = {i: k for k, i in enumerate(uniq)}
    return batch[[pos[i] for i in indices]]


def probe_image(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image, decoding it fully so a truncated file is caught."""
    from PIL import Image

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise MediaError(path, "empty file (0 bytes)")
        with Image.open(path) as im:
            im.load()
            return int(im.width), int(im.height)
    except MediaError:
        raise
    except Exception as e:  # PIL: UnidentifiedImageError, OSError("image file is truncated"), ...
        raise MediaError(path, f"not a readable image ({e})") from None


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 RGB [H, W, 3] (alpha dropped, palette/greyscale converted), resized (antialiased) to ``size``."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            if size is not None and rgb.size != tuple(size):
                rgb = rgb.resize(tuple(size), Image.Resampling.BICUBIC)
            return np.asarray(rgb)
    except Exception as e:
        raise MediaError(path, f"not a readable image ({e})") from None
