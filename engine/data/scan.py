"""What is in a dataset folder: clips and images, their length, fps, size and captions (torch-free).

Used by ``wanlora scan``, by ``wanlora validate`` (folder checks before a GPU is touched) and by the
wizard's dataset panel.  Reads container metadata plus the first and last frame of each clip, never the
whole clip, so a folder of 30 clips scans in about a second.  An unreadable file becomes an item with
``error`` set; only a folder that cannot be listed at all raises.

Only regular files are ever opened: a FIFO, socket or device (or a link to one, e.g. ``/dev/zero``) named
like a clip or caption would block or never end, so it is skipped and named in ``FolderReport.skipped``
(a caption of that kind makes its clip unreadable, saying why).  Captions are capped at
``MAX_CAPTION_BYTES``.
"""

from __future__ import annotations

import os
import stat
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
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # not regular files: (path, what it is)

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


MAX_CAPTION_BYTES = 256 * 1024  # UMT5 reads 512 tokens (~3 KB); anything far larger is not a caption


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (for the skipped list)."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def read_caption(media: str | Path, caption_ext: str = "txt") -> str | None:
    """Text of the same-stem caption file (stripped), or None if there is none.

    Invalid UTF-8 bytes are replaced rather than failing: a caption with one odd byte is still a caption.
    A caption that is not a regular file (FIFO, device, socket) or is over ``MAX_CAPTION_BYTES`` raises
    :class:`MediaError` naming the caption file: it is never opened for reading or read to the end.
    """
    p = Path(media).with_suffix("." + caption_ext.lstrip("."))
    try:
        st = p.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise MediaError(p, f"caption {p.name} cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(p, f"caption {p.name} is {file_kind(st.st_mode)}, not a text file; replace it with a .txt file")
    if st.st_size > MAX_CAPTION_BYTES:
        raise MediaError(p, f"caption {p.name} is {st.st_size // 1024} KB (limit {MAX_CAPTION_BYTES // 1024} KB); "
                            "a caption is a sentence or two")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise MediaError(p, f"caption {p.name} cannot be read ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped between stat and open
            raise MediaError(p, f"caption {p.name} is not a regular file")
        data = f.read(MAX_CAPTION_BYTES + 1)
    if len(data) > MAX_CAPTION_BYTES:
        raise MediaError(p, f"caption {p.name} is larger than {MAX_CAPTION_BYTES // 1024} KB")
    return data.decode("utf-8", errors="replace").strip()


def scan_file(path: str | Path, caption_ext: str = "txt", check_last: bool = True) -> ClipInfo:
    """Metadata of one clip or image; an unreadable file gives ``error`` instead of raising."""
    path = Path(path)
    kind = media_kind(path)
    if kind is None:
        raise ValueError(f"{path}: not a clip or image (videos: .mp4 .mov .mkv .webm .avi; images: .png .jpg .jpeg .webp)")
    try:
        caption = read_caption(path, caption_ext)
    except MediaError as e:
        return ClipInfo(path, kind, caption=None, error=e.reason)
    try:
        st = path.stat()
    except OSError as e:
        return ClipInfo(path, kind, caption=caption, error=f"cannot be read ({e.strerror or e})")
    if not stat.S_ISREG(st.st_mode):
        return ClipInfo(path, kind, caption=caption, error=f"{file_kind(st.st_mode)}, not a media file")
    try:
        if kind == "video":
            m = probe_video(path, check_last=check_last)
            dur = m.frames / m.fps if m.fps > 0 else 0.0
            return ClipInfo(path, "video", m.frames, m.fps, dur, m.width, m.height, caption)
        w, h = probe_image(path)
        return ClipInfo(path, "image", 1, 0.0, 0.0, w, h, caption)
    except MediaError as e:
        return ClipInfo(path, kind, caption=caption, error=e.reason)


def list_media(folder: str | Path, skipped: list[tuple[Path, str]] | None = None) -> tuple[list[Path], list[Path]]:
    """(media files, ignored files) directly in ``folder``, sorted by name; hidden files and captions skipped.

    Entries that are not regular files (FIFOs, sockets, devices, links to them) are never returned; when
    ``skipped`` is given they are appended to it as (path, what it is).
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
        p = Path(e.path)
        try:
            mode = e.stat().st_mode  # follows links: a link to a clip is fine, a link to /dev/zero is not
        except OSError:
            continue  # dangling link or vanished
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            if skipped is not None:
                skipped.append((p, file_kind(mode)))
            continue
        if media_kind(p) is not None:
            media.append(p)
        elif p.suffix.lower() not in (".txt", ".caption", ".json", ".toml"):
            ignored.append(p)
    return media, ignored


def folder_plan(folder: str | Path, caption_ext: str = "txt") -> tuple[FolderReport, list[Path]]:
    """What :func:`scan_folder` will read: a report with no items yet, and the media files to scan in order.

    For a caller that scans file by file (``wanlora scan`` puts a time limit on each file)."""
    skipped: list[tuple[Path, str]] = []
    media, ignored = list_media(folder, skipped)
    # caption files of another extension are "ignored" too unless they are the caption extension
    cap = "." + caption_ext.lstrip(".").lower()
    ignored = [p for p in ignored if p.suffix.lower() != cap]
    return FolderReport(Path(folder).expanduser(), [], ignored, skipped), media


def scan_folder(folder: str | Path, caption_ext: str = "txt", check_last: bool = True) -> FolderReport:
    """Every clip and image directly in ``folder`` (not recursive, like the peers' ``folder_path``)."""
    report, media = folder_plan(folder, caption_ext)
    report.items = [scan_file(p, caption_ext, check_last) for p in media]
    return report
