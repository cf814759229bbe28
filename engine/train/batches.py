"""Batches for the loop, in the dataset's deterministic, resumable order; unreadable clips are skipped.

The loop needs three things from the data layer: the next batch (pixels ``[B,3,F,H,W]`` in [-1, 1] and
captions with trigger + dropout applied), a ``state_dict`` of the order (epoch, position) to save with
the training state, and ``load_state_dict`` to continue from it bit for bit.  :func:`make_batch_source`
builds that on ``engine.data.dataset`` (the data layer's ``build_dataset(job, seed=...)``) when present.

Until that module lands, :class:`ProvisionalSource` does the same job with the data layer's pure helpers
(decode, frames, buckets, captions): per-epoch permutation from ``(seed, epoch)``, caption dropout from
``(seed, epoch, position)``, first resolution's bucket, centre crop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

Warn = Callable[..., None]
MAX_CONSECUTIVE_FAILURES = 50


class DataExhausted(Exception):
    """No usable clip left (every one failed to load): the job cannot train."""


@dataclass
class Batch:
    pixels: torch.Tensor  # [B, 3, F, H, W] float32 in [-1, 1]
    captions: list[str]
    paths: list[str]


class BatchSource(Protocol):
    def next_batch(self) -> Batch: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _to_pixels(frames: np.ndarray, width: int, height: int) -> torch.Tensor:
    """uint8 ``[F,H,W,3]`` → float ``[3,F,h,w]`` in [-1, 1], scaled to cover (w, h) and centre-cropped."""
    from engine.data.buckets import crop_plan

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # F,3,H,W
    plan = crop_plan(x.shape[-1], x.shape[-2], width, height)
    if (plan.resize_w, plan.resize_h) != (x.shape[-1], x.shape[-2]):
        x = torch.nn.functional.interpolate(x, size=(plan.resize_h, plan.resize_w), mode="bilinear",
                                            antialias=True, align_corners=False)
    x = x[..., plan.top: plan.top + height, plan.left: plan.left + width]
    return x.clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


@dataclass
class _Item:
    path: Path
    caption: str
    ds: int  # index into job.datasets


class ProvisionalSource:
    """A minimal loader over the job's dataset folders (see the module docstring)."""

    def __init__(self, job, seed: int, warn: Warn) -> None:
        from engine.data.captions import caption_for
        from engine.data.scan import list_media

        self.job, self.seed, self.warn = job, seed, warn
        self.items: list[_Item] = []
        for i, ds in enumerate(job.datasets):
            videos, images = list_media(ds.folder)
            for p in sorted(videos + images):
                self.items.append(_Item(Path(p), caption_for(p, ds.caption_ext, ds.default_caption), i))
        if not self.items:
            raise DataExhausted("no clip or image found in the job's dataset folders")
        self.epoch, self.pos = 0, 0
        self.bad: set[str] = set()

    def _order(self) -> list[int]:
        return list(np.random.default_rng([self.seed, self.epoch]).permutation(len(self.items)))

    def _load(self, item: _Item, epoch: int, pos: int) -> tuple[torch.Tensor, str]:
        from engine.data.buckets import bucket_for
        from engine.data.captions import caption_dropout, final_caption
        from engine.data.decode import media_kind, probe_video, read_image, read_video_frames
        from engine.data.frames import sample_indices

        ds = self.job.datasets[item.ds]
        rng = np.random.default_rng([self.seed, epoch, pos])
        if media_kind(item.path) == "image":
            frames = read_image(item.path)[None]
        else:
            meta = probe_video(item.path, check_last=False)
            sel = sample_indices(ds.frame_sampling, meta.frames, meta.fps, ds.num_frames, rng=rng)
            frames = read_video_frames(item.path, list(sel.indices))
        w, h = bucket_for(frames.shape[2], frames.shape[1], ds.resolutions[0])
        dropped = caption_dropout(ds.caption_dropout, rng)
        return _to_pixels(frames, w, h), final_caption(item.caption, self.job.job.trigger_word, dropped)

    def _next_item(self) -> tuple[torch.Tensor, str, str]:
        from engine.data.decode import MediaError

        failures = 0
        while True:
            order = self._order()
            if self.pos >= len(order):
                self.epoch, self.pos = self.epoch + 1, 0
                continue
            item = self.items[order[self.pos]]
            epoch, pos = self.epoch, self.pos
            self.pos += 1
            try:
                pixels, caption = self._load(item, epoch, pos)
                return pixels, caption, str(item.path)
            except (MediaError, ValueError, OSError) as e:
                failures += 1
                if str(item.path) not in self.bad:
                    self.bad.add(str(item.path))
                    self.warn(f"skipping unreadable clip: {e}", path=str(item.path))
                if failures >= min(MAX_CONSECUTIVE_FAILURES, 2 * len(self.items)):
                    raise DataExhausted(f"{failures} clips in a row could not be read; last: {e}") from None

    def next_batch(self) -> Batch:
        px, caps, paths = [], [], []
        for _ in range(self.job.training.batch_size):
            p, c, path = self._next_item()
            if px and p.shape != px[0].shape:  # another bucket: keep batches shape-uniform
                self.pos -= 1
                break
            px.append(p)
            caps.append(c)
            paths.append(path)
        return Batch(torch.stack(px), caps, paths)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "provisional", "epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


def make_batch_source(job, seed: int, warn: Warn) -> BatchSource:
    """The job's batch source (the data layer's dataset when available)."""
    return ProvisionalSource(job, seed, warn)
