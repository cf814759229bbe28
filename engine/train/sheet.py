"""The comparison sheet: a contact-sheet PNG and an mp4 grid of preview cells (numpy + PIL, no torch).

Rows are checkpoints, columns are prompts.  In the PNG each cell shows a few frames of its preview side by
side (first … last), so motion is visible on one still image; the mp4 plays every cell at once, tiles
scaled so the whole grid stays within ``max_width`` pixels.  Left of each row: its label lines (step,
eval losses, the suggested pick); above each column: the prompt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

BG, FG, DIM, MISSING = (18, 18, 18), (235, 235, 235), (150, 150, 150), (60, 20, 20)
LABEL_W = 200
HEADER_H = 28


def frame_indices(num_frames: int, k: int = 3) -> list[int]:
    """``k`` evenly spaced frame indices from first to last (fewer when the clip is shorter)."""
    if num_frames <= 0:
        return []
    if k <= 1 or num_frames == 1:
        return [0]
    k = min(k, num_frames)
    return sorted({round(i * (num_frames - 1) / (k - 1)) for i in range(k)})


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _text(img, xy: tuple[int, int], lines: Sequence[str], width: int, fill=FG, line_h: int = 12) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    max_chars = max(4, width // 6)
    x, y = xy
    for i, line in enumerate(lines):
        s = line if len(line) <= max_chars else line[: max_chars - 1] + "…"
        draw.text((x, y + i * line_h), s, fill=fill if i == 0 else DIM, font=_font())


def _resize(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    if frame.shape[1] == w and frame.shape[0] == h:
        return frame
    return np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BICUBIC))


def contact_sheet(cells: Sequence[Sequence[np.ndarray | None]], row_labels: Sequence[Sequence[str]],
                  col_titles: Sequence[str], out: Path, *, title: str = "", thumb_h: int = 160) -> Path:
    """PNG at ``out``: ``cells[r][c]`` = frames ``[k, H, W, 3]`` uint8 (None = not rendered, a dark cell)."""
    from PIL import Image

    sample = next((c for row in cells for c in row if c is not None), None)
    k = sample.shape[0] if sample is not None else 3
    h0, w0 = (sample.shape[1], sample.shape[2]) if sample is not None else (thumb_h, thumb_h)
    th = min(thumb_h, h0) if h0 >= 32 else h0
    tw = max(1, round(w0 * th / h0))
    cell_w, cell_h = k * tw + (k - 1) * 2 + 8, th + 8
    n_rows, n_cols = len(cells), max(1, len(col_titles))
    top = HEADER_H + (16 if title else 0)
    width = LABEL_W + n_cols * cell_w
    height = top + n_rows * cell_h
    img = Image.new("RGB", (width, height), BG)
    if title:
        _text(img, (6, 4), [title], width)
    for c, t in enumerate(col_titles):
        _text(img, (LABEL_W + c * cell_w + 4, top - HEADER_H + 8), [t], cell_w - 8)
    for r, row in enumerate(cells):
        y = top + r * cell_h
        _text(img, (6, y + 4), list(row_labels[r]) if r < len(row_labels) else [], LABEL_W - 10)
        for c, frames in enumerate(row):
            x = LABEL_W + c * cell_w + 4
            if frames is None:
                img.paste(Image.new("RGB", (cell_w - 8, th), MISSING), (x, y + 4))
                continue
            for j, f in enumerate(frames):
                img.paste(Image.fromarray(_resize(f, tw, th)), (x + j * (tw + 2), y + 4))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    img.save(tmp)
    tmp.replace(out)
    return out


def grid_layout(n_cols: int, w: int, h: int, max_width: int = 1920) -> tuple[int, int]:
    """Tile size (w, h), even numbers, so ``LABEL_W + n_cols · w ≤ max_width`` (never upscaled)."""
    scale = min(1.0, (max_width - LABEL_W) / max(1, n_cols * w))
    return max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)


def grid_frames(videos: Sequence[Sequence[np.ndarray | None]], row_labels: Sequence[Sequence[str]],
                *, max_width: int = 1920) -> Iterator[np.ndarray]:
    """Frames of the mp4 grid: ``videos[r][c]`` = ``[F, H, W, 3]`` uint8 (None = a dark tile).

    Sides are padded to multiples of 16 (H.264 macro blocks).  Shorter videos hold their last frame.
    """
    from PIL import Image

    sample = next((v for row in videos for v in row if v is not None), None)
    if sample is None:
        return
    n_frames = max(v.shape[0] for row in videos for v in row if v is not None)
    n_cols = max(len(row) for row in videos)
    tw, th = grid_layout(n_cols, sample.shape[2], sample.shape[1], max_width)
    width = LABEL_W + n_cols * tw
    height = len(videos) * th
    pw, ph = -(-width // 16) * 16, -(-height // 16) * 16
    base = Image.new("RGB", (pw, ph), BG)
    for r in range(len(videos)):
        _text(base, (6, r * th + 4), list(row_labels[r]) if r < len(row_labels) else [], LABEL_W - 10)
    base_arr = np.asarray(base).copy()
    for r, row in enumerate(videos):
        for c, v in enumerate(row):
            if v is None:
                base_arr[r * th:(r + 1) * th, LABEL_W + c * tw:LABEL_W + (c + 1) * tw] = MISSING
    for i in range(n_frames):
        frame = base_arr.copy()
        for r, row in enumerate(videos):
            for c, v in enumerate(row):
                if v is None:
                    continue
                f = v[min(i, v.shape[0] - 1)]
                frame[r * th:(r + 1) * th, LABEL_W + c * tw:LABEL_W + (c + 1) * tw] = _resize(f, tw, th)
        yield frame
