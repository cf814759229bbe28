"""Caption a folder: which files need a caption, one caption per clip, written next to it (no torch here).

The rules a user relies on:

- a clip's caption is ``<clip stem>.<caption_ext>`` (``clip.mp4`` → ``clip.txt``), exactly the file the
  dataset code reads (``scan.read_caption``);
- an existing caption file is never replaced unless ``overwrite``; the new file is created with
  ``link()``, which fails if one appeared meanwhile, so even a caption written by hand during the run is kept;
- a clip that cannot be decoded is named with the reason and skipped; the rest go on;
- every caption is complete on disk before the next clip starts (temp file, then link/rename), so an
  interrupted run keeps everything it wrote, and running again captions only what is still missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from wanlora.engine.caption.prompts import check_options, finish, instruction
from wanlora.engine.caption.sampling import CAPTION_FPS, MAX_FRAMES, Frames, load_frames
from wanlora.engine.data.decode import MediaError, media_kind
from wanlora.engine.data.scan import list_media, read_caption, scan_file


class CaptionerLike(Protocol):
    """What the loop needs from a model (vlm.Captioner; tests may pass a fake)."""

    max_pixels: int

    def caption(self, frames: Frames, prompt: str) -> str: ...


@dataclass(frozen=True)
class CaptionOptions:
    recipe: str = "motion"
    trigger: str = ""
    class_word: str = ""
    overwrite: bool = False
    dry_run: bool = False
    caption_ext: str = "txt"
    fps: float = CAPTION_FPS
    max_frames: int = MAX_FRAMES

    def check(self) -> None:
        check_options(self.recipe, self.trigger, self.class_word)


@dataclass
class ClipResult:
    path: Path
    status: str  # "written" | "printed" | "kept" (a caption appeared meanwhile) | "skipped" (unreadable)
    caption: str = ""
    error: str = ""
    seconds: float = 0.0


@dataclass
class Plan:
    """What a run will do: clips to caption, clips that keep their caption, files it cannot read."""

    folder: Path
    todo: list[Path] = field(default_factory=list)
    captioned: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class Summary:
    results: list[ClipResult] = field(default_factory=list)
    interrupted: bool = False

    def of(self, status: str) -> list[ClipResult]:
        return [r for r in self.results if r.status == status]


def caption_path(media: str | Path, caption_ext: str = "txt") -> Path:
    """The caption file the dataset code reads for ``media``."""
    return Path(media).with_suffix("." + caption_ext.lstrip("."))


def has_caption(media: Path, caption_ext: str = "txt") -> bool:
    """Whether a caption file is there (an empty one counts, as in the dataset; an unreadable one too)."""
    try:
        return read_caption(media, caption_ext) is not None
    except MediaError:
        return True  # a FIFO or oversize "caption": not ours to replace


def plan(folder: str | Path, caption_ext: str = "txt", overwrite: bool = False, probe: bool = True) -> Plan:
    """Which media files get a caption in this run.  Raises scan.ScanError for a folder that cannot be listed.

    With ``probe`` each candidate's container and first/last frame are read (``scan.scan_file``, a fraction
    of a second each) so unreadable files are named before a multi-GB model is loaded for nothing.
    """
    skipped: list[tuple[Path, str]] = []
    media, _ignored = list_media(folder, skipped)
    out = Plan(Path(folder).expanduser(), skipped=[(p, f"{what}, not a media file") for p, what in skipped])
    for p in media:
        if not overwrite and has_caption(p, caption_ext):
            out.captioned.append(p)
            continue
        info = scan_file(p, caption_ext) if probe else None
        if info is not None and info.error:
            out.skipped.append((p, info.error))
        else:
            out.todo.append(p)
    return out


def write_caption(media: Path, text: str, caption_ext: str = "txt", overwrite: bool = False) -> bool:
    """Write the caption file atomically; False (nothing written) if one exists and not ``overwrite``."""
    final = caption_path(media, caption_ext)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text.strip() + "\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, final)
            return True
        try:
            os.link(tmp, final)  # fails if the caption exists: never clobbers one written meanwhile
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def caption_one(captioner: CaptionerLike, media: Path, opts: CaptionOptions) -> ClipResult:
    """Decode, ask, post-process and (unless dry run) write one clip's caption."""
    t0 = time.monotonic()
    kind = media_kind(media) or "video"
    try:
        frames = load_frames(media, opts.fps, opts.max_frames, captioner.max_pixels)
    except MediaError as e:
        return ClipResult(media, "skipped", error=e.reason, seconds=time.monotonic() - t0)
    prompt = instruction(opts.recipe, "image" if kind == "image" else "video", opts.trigger, opts.class_word)
    text = finish(captioner.caption(frames, prompt), opts.recipe, opts.trigger, opts.class_word)
    if not text:
        return ClipResult(media, "skipped", error="the model gave an empty caption", seconds=time.monotonic() - t0)
    if opts.dry_run:
        return ClipResult(media, "printed", text, seconds=time.monotonic() - t0)
    done = write_caption(media, text, opts.caption_ext, opts.overwrite)
    return ClipResult(media, "written" if done else "kept", text, seconds=time.monotonic() - t0)


def caption_files(captioner: CaptionerLike, files: list[Path], opts: CaptionOptions, *,
                  on_result: Callable[[int, int, ClipResult], Any] | None = None,
                  should_stop: Callable[[], bool] | None = None, summary: Summary | None = None) -> Summary:
    """Caption ``files`` in order.  ``summary`` (if given) is filled as it goes, so a caller that is
    interrupted (Ctrl-C) still knows what was written; ``should_stop`` is asked between clips."""
    opts.check()
    summary = summary if summary is not None else Summary()
    for i, media in enumerate(files):
        if should_stop is not None and should_stop():
            summary.interrupted = True
            break
        res = caption_one(captioner, media, opts)
        summary.results.append(res)
        if on_result is not None:
            on_result(i + 1, len(files), res)
    return summary
