"""What is in a dataset folder: clips and images, their length, fps, size and captions (torch-free).

Used by ``wanlora scan``, by ``wanlora validate`` (folder checks before a GPU is touched) and by the
wizard's dataset panel.  Reads container metadata plus the first and last frame of each clip, never the
whole clip, so a folder of 30 clips scans in about a second.  An unreadable file becomes an item with
``error`` set; only a folder that cannot be listed at all raises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from wanlora.engine.data.decode import MediaError, media_kind, probe_image, probe_video


class ScanError(Exception):
    """The folder itself is missing, not a folder or unreadable.  The message names it and the fix."""


@dataclass(frozen=True)
class ClipInfo:
    """One clip or image.  ``frames``/``fps``/``duration_s`` are 1/0/0 for images and 0 when unreadable."""

    path: Path
    kind: Literal["video", "image"]
    frames: int = 0
    fps: float = 0.0
    duration_s: float = 0.0
    width: int = 0
    height: int = 0
    caption: str | None = None  # text of the same-stem caption file; None = no caption file
    error: str | None = None  # why the file is unreadable; None = fine

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def has_caption(self) -> bool:
        return self.caption is not None


@dataclass
class FolderReport:
    folder: Path
    items: list[ClipInfo]
    ignored: list[Path] = field(default_factory=list)  # files that are neither media nor captions

    @property
    def usable(self) -> list[ClipInfo]:
        return [c for c in self.items if c.ok]

    @property
    def unreadable(self) -> list[ClipInfo]:
        return [c for c in self.items if not c.ok]

    @property
    def missing_captions(self) -> list[ClipInfo]:
        """Usable items without a caption file (they get ``default_caption``)."""
        return [c for c in self.usable if c.caption is None]

    @property
    def videos(self) -> list[ClipInfo]:
        return [c for c in self.usable if c.kind == "video"]

    @property
    def images(self) -> list[ClipInfo]:
        return [c for c in self.usable if c.kind == "image"]

    @property
    def total_duration_s(self) -> float:
        return float(sum(c.duration_s for c in self.videos))


def read_caption(media: str | Path, caption_ext: str = "txt") -> str | None:
    """Text of the same-stem caption file (stripped), or None if there is none.

    Invalid UTF-8 bytes are replaced rather than failing: a caption with one odd byte is still a caption.
    """
    p = Path(media).with_suffix("." + caption_ext.lstrip("."))
    try:
        return p.read_bytes().decode("utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return None


def scan_file(path: str | Path, caption_ext: str = "txt", check_last: bool = True) -> ClipInfo:
    """Metadata of one clip or image; an unreadable file gives ``error`` instead of raising."""
    path = Path(path)
    kind = media_kind(path)
    if kind is None:
        raise ValueError(f"{path}: not a clip or image (videos: .mp4 .mov .mkv .webm .avi; images: .png .jpg .jpeg .webp)")
    caption = read_caption(path, caption_ext)
    try:
        if kind == "video":
            m = probe_video(path, check_last=check_last)
            dur = m.frames / m.fps if m.fps > 0 else 0.0
            return ClipInfo(path, "video", m.frames, m.fps, dur, m.width, m.height, caption)
        w, h = probe_image(path)
        return ClipInfo(path, "image", 1, 0.0, 0.0, w, h, caption)
    except MediaError as e:
        return ClipInfo(path, kind, caption=caption, error=e.reason)


def list_media(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """(media files, ignored files) directly in ``folder``, sorted by name; hidden files and captions skipped.

    Raises ScanError if the folder is missing, not a folder, or cannot be listed.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise ScanError(f"dataset folder {folder} does not exist; check datasets[].folder (absolute paths are safest)")
    if not folder.is_dir():
        raise ScanError(f"dataset folder {folder} is a file, not a folder; point datasets[].folder at its folder")
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except PermissionError:
        raise ScanError(f"dataset folder {folder} cannot be read (permission denied); fix with: chmod -R u+rX {folder}") from None
    except OSError as e:
        raise ScanError(f"dataset folder {folder} cannot be read ({e.strerror or e})") from None
    media: list[Path] = []
    ignored: list[Path] = []
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            is_file = e.is_file()
        except OSError:
            is_file = False
        if not is_file:
            continue
        p = Path(e.path)
        if media_kind(p) is not None:
            media.append(p)
        elif p.suffix.lower() not in (".txt", ".caption", ".json", ".toml"):
            ignored.append(p)
    return media, ignored


def scan_folder(folder: str | Path, caption_ext: str = "txt", check_last: bool = True) -> FolderReport:
    """Every clip and image directly in ``folder`` (not recursive, like the peers' ``folder_path``)."""
    media, ignored = list_media(folder)
    # caption files of another extension are "ignored" too unless they are the caption extension
    cap = "." + caption_ext.lstrip(".").lower()
    ignored = [p for p in ignored if p.suffix.lower() != cap]
    items = [scan_file(p, caption_ext, check_last) for p in media]
    return FolderReport(Path(folder).expanduser(), items, ignored)
