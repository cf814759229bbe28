"""Training data for the trainer (torch): the job's datasets → bucketed, captioned pixel batches.

Usage (the whole API the train loop needs)::

    data = build_dataset(job, seed=job.training.seed, rank=rank, world_size=world, warn=warn)
    data.load_state_dict(saved["data"])        # on resume (JSON-able dict from state_dict())
    batch = data.next_batch()                  # Batch: pixels [B,3,F,H,W] float32 in [-1,1], captions
    saved["data"] = data.state_dict()          # one number (the next global batch) + checks

``build_dataset`` scans every folder up front (metadata + first/last frame), so unreadable clips are
reported by name through ``warn(message, path)`` and left out before training starts; a clip that still
fails later is reported the same way and replaced by another sample of its batch, never a crash.  The
order (which clip, resolution, bucket, batch; see :mod:`engine.data.order`) is computed from metadata
alone, identically on every rank; loading a sample is a pure function of its :class:`SampleRef`, so a
resumed run — with the same or a different world size — sees bit-for-bit the same data.

Per sample: frame indices (:mod:`engine.data.frames`; ``even`` or ``fps``), decode + scale in decord,
centre-crop to the bucket (:mod:`engine.data.buckets`), optional random flips (50 % each when
``flip_x``/``flip_y``), caption with ``[trigger]`` substituted (and the trigger prepended where missing,
``job.inject_trigger``) and caption dropout
(:mod:`engine.data.captions`).  Images are one-frame samples (bucket F = 1) whatever ``num_frames`` is.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from wanlora.engine.config.schema import DatasetSection, Job
from wanlora.engine.data.buckets import bucket_for, crop_plan
from wanlora.engine.data.captions import caption_dropout, final_caption
from wanlora.engine.data.decode import MediaError, read_image, read_video_frames
from wanlora.engine.data.frames import FrameSelection, fps_indices, fps_windows, pick_window, sample_indices
from wanlora.engine.data.order import Bucket, DataOrder, PlannedBatch, SampleRef, SourceSpec
from wanlora.engine.data.scan import ScanError, scan_folder

STATE_VERSION = 1
Warn = Callable[..., None]  # warn(message: str, path: str | None = None)


class DataExhausted(Exception):
    """No usable clip or image: a folder is missing, empty, or every file in it is unreadable."""


@dataclass(frozen=True)
class ClipEntry:
    """One usable clip or image of a dataset, with what scanning learned about it."""

    path: Path
    kind: str  # "video" | "image"
    frames: int
    fps: float
    width: int
    height: int
    caption_raw: str  # caption file text, else the dataset's default_caption; [trigger] not substituted
    dataset_index: int
    clip_index: int


@dataclass
class Sample:
    pixels: torch.Tensor  # float32 [3, F, H, W] in [-1, 1]
    caption: str  # what to encode: "" if dropped, else captions.training_caption(caption_raw, ...)
    caption_raw: str  # before trigger substitution and dropout (DOP re-substitutes the class word)
    dropped: bool  # caption dropout hit this sample
    path: Path
    bucket: Bucket  # (F, H, W)
    resolution: int
    is_regularization: bool
    dataset_index: int
    frame_indices: tuple[int, ...]
    flipped_x: bool
    flipped_y: bool
    position: int  # global position in the sample stream
    epoch: int

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Batch:
    pixels: torch.Tensor  # float32 [B, 3, F, H, W] in [-1, 1]
    captions: list[str]
    samples: list[Sample]
    index: int  # global batch index
    epoch: int
    bucket: Bucket
    warnings: list[tuple[str, str | None]] = field(default_factory=list)  # already sent to warn()

    @property
    def paths(self) -> list[str]:
        return [str(s.path) for s in self.samples]

    @property
    def raw_captions(self) -> list[str]:
        return [s.caption_raw for s in self.samples]

    @property
    def dropped(self) -> list[bool]:
        return [s.dropped for s in self.samples]

    @property
    def is_regularization(self) -> list[bool]:
        return [s.is_regularization for s in self.samples]


def _default_warn(message: str, path: str | None = None) -> None:
    import warnings

    warnings.warn(message, stacklevel=3)


def _entries_for(i: int, ds: DatasetSection, warn: Warn) -> list[ClipEntry]:
    try:
        report = scan_folder(ds.folder, caption_ext=ds.caption_ext)
    except ScanError as e:
        raise DataExhausted(f"datasets[{i}]: {e}") from None
    for c in report.unreadable:
        warn(f"{c.path}: {c.error}; skipped (re-export or remove it)", str(c.path))
    out = []
    for c in report.usable:
        raw = c.caption if c.caption is not None else ds.default_caption.strip()
        out.append(ClipEntry(c.path, c.kind, c.frames, c.fps, c.width, c.height, raw, i, len(out)))
        if c.kind == "video" and ds.num_frames > 1:
            note = sample_indices(ds.frame_sampling, c.frames, c.fps, ds.num_frames).note
            if note:
                warn(f"{c.path}: {note}", str(c.path))
    return out


def _buckets(e: ClipEntry, ds: DatasetSection) -> tuple[Bucket, ...]:
    f = ds.num_frames if e.kind == "video" else 1
    out = []
    for res in ds.resolutions:
        w, h = bucket_for(e.width, e.height, res)
        out.append((f, h, w))
    return tuple(out)


class ClipDataset:
    """This rank's endless stream of batches; see the module docstring for the contract."""

    def __init__(
        self,
        job: Job,
        entries: list[list[ClipEntry]],
        seed: int,
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        warn: Warn = _default_warn,
        num_workers: int = 0,
    ) -> None:
        self.job = job
        self.configs = list(job.datasets)
        self.entries = entries
        self.trigger_word = job.job.trigger_word
        self.inject_trigger = job.job.inject_trigger
        self.rank, self.world_size = int(rank), int(world_size)
        self.warn = warn
        self.num_workers = int(num_workers)
        self.batch_size = int(batch_size)
        self.specs = [
            SourceSpec(ds.weight, tuple(ds.resolutions), tuple(_buckets(e, ds) for e in ents))
            for ds, ents in zip(self.configs, entries, strict=True)
        ]
        self.order = DataOrder(self.specs, seed, self.batch_size)
        self.seed = int(seed)
        self.fingerprint = self._fingerprint()
        self._bad: set[Path] = set()
        self._lock = threading.Lock()
        self._start = 0  # global batch where this run (or resume) started
        self._rounds = 0  # next_batch() calls since _start
        self._epoch = 0
        self._plan: Iterator[PlannedBatch] | None = None
        self._queue: deque[tuple[PlannedBatch, Future | None]] = deque()
        self._pool: ThreadPoolExecutor | None = None

    # ---------------------------------------------------------------- info
    def __len__(self) -> int:
        """Usable clips and images over all datasets."""
        return sum(len(e) for e in self.entries)

    def entry(self, ref: SampleRef) -> ClipEntry:
        return self.entries[ref.dataset_index][ref.clip_index]

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for ds, ents in zip(self.configs, self.entries, strict=True):
            h.update(json.dumps([ds.weight, ds.resolutions, ds.num_frames, ds.frame_sampling, ds.is_regularization,
                                 ds.caption_dropout, ds.flip_x, ds.flip_y]).encode())
            for e in ents:
                h.update(f"{e.path.name}|{e.frames}|{e.width}x{e.height}\n".encode())
        return h.hexdigest()[:16]

    # ---------------------------------------------------------------- one sample
    def load(self, ref: SampleRef, augment: bool = True) -> Sample:
        """Decode and prepare one planned sample (raises MediaError if the file fails).

        ``augment=False`` (latent caching): frame offset 0, no flips, no caption dropout.
        """
        e = self.entry(ref)
        ds = self.configs[ref.dataset_index]
        rng = random.Random(ref.seed)
        u_offset, u_fx, u_fy = rng.random(), rng.random(), rng.random()  # fixed draw order
        dropped = augment and caption_dropout(ds.caption_dropout, rng)
        f = ref.bucket[0]
        if e.kind == "video":
            if ds.frame_sampling == "fps" and ds.cache_latents:  # fixed windows: see frames.fps_windows
                sel = pick_window(fps_windows(e.frames, e.fps, f), u_offset if augment else 0.0)
            elif ds.frame_sampling == "fps":
                sel = fps_indices(e.frames, e.fps, f, rng=_Fixed(u_offset) if augment else None)
            else:
                sel = sample_indices("even", e.frames, e.fps, f)
            idx = sel.indices
        else:
            idx = (0,)
        fx = augment and ds.flip_x and u_fx < 0.5
        fy = augment and ds.flip_y and u_fy < 0.5
        pixels = self.pixels(e, ref.bucket, idx, fx, fy)
        return Sample(
            pixels=pixels,
            caption=final_caption(e.caption_raw, self.trigger_word, dropped, inject=self.inject_trigger,
                                  is_regularization=ds.is_regularization),
            caption_raw=e.caption_raw,
            dropped=dropped,
            path=e.path,
            bucket=ref.bucket,
            resolution=ref.resolution,
            is_regularization=ds.is_regularization,
            dataset_index=ref.dataset_index,
            frame_indices=tuple(idx),
            flipped_x=fx,
            flipped_y=fy,
            position=ref.position,
            epoch=ref.epoch,
        )

    def frame_choices(self, e: ClipEntry, num_frames: int) -> list[FrameSelection]:
        """Every frame selection ``load`` can make for ``e`` (latent caching enumerates these up front).

        ``even``: one; ``fps`` with ``cache_latents``: the fixed windows; ``fps`` without: only offset 0
        is listed (the live path draws any offset).
        """
        if e.kind != "video":
            return [FrameSelection((0,))]
        ds = self.configs[e.dataset_index]
        if ds.frame_sampling == "fps":
            return fps_windows(e.frames, e.fps, num_frames) if ds.cache_latents else [fps_indices(e.frames, e.fps, num_frames)]
        return [sample_indices("even", e.frames, e.fps, num_frames)]

    def pixels(self, e: ClipEntry, bucket: Bucket, indices: tuple[int, ...], flip_x: bool = False,
               flip_y: bool = False) -> torch.Tensor:
        """Frames ``indices`` of ``e`` scaled + centre-cropped to ``bucket``, flipped: float32 [3,F,H,W] in [-1, 1]."""
        _f, h, w = bucket
        plan = crop_plan(e.width, e.height, w, h)
        size = (plan.resize_w, plan.resize_h)
        if e.kind == "video":
            arr = read_video_frames(e.path, indices, size=size)
        else:
            arr = read_image(e.path, size=size)[None]
        if arr.shape[1:3] != (plan.resize_h, plan.resize_w):  # decoder rounded: scale to the plan exactly
            arr = _resize_uint8(arr, plan.resize_w, plan.resize_h)
        arr = arr[:, plan.top : plan.top + h, plan.left : plan.left + w]
        if flip_x:
            arr = arr[:, :, ::-1]
        if flip_y:
            arr = arr[:, ::-1]
        arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:  # PIL-backed arrays are read-only; torch wants writable memory
            arr = arr.copy()
        return torch.from_numpy(arr).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)

    def _try_load(self, ref: SampleRef) -> Sample | MediaError:
        path = self.entry(ref).path
        with self._lock:
            if path in self._bad:
                return MediaError(path, "unreadable (reported before)")
        try:
            return self.load(ref)
        except MediaError as err:
            return err

    def _load_batch(self, pb: PlannedBatch) -> list[Sample | MediaError]:
        return [self._try_load(r) for r in pb.refs]

    # ---------------------------------------------------------------- the stream
    def _ensure_plan(self) -> None:
        if self._plan is None:
            self._plan = self.order.rank_batches(self._start + self._rounds * self.world_size, self.rank, self.world_size)

    def _fill(self) -> None:
        self._ensure_plan()
        assert self._plan is not None
        depth = max(1, self.num_workers + 1)
        if self.num_workers > 0 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="wanlora-data")
        while len(self._queue) < depth:
            pb = next(self._plan)
            fut = self._pool.submit(self._load_batch, pb) if self._pool is not None else None
            self._queue.append((pb, fut))

    def _reset_stream(self) -> None:
        for _pb, fut in self._queue:
            if fut is not None:
                fut.cancel()
        self._queue.clear()
        self._plan = None

    def next_batch(self) -> Batch:
        """This rank's next batch.  Raises DataExhausted once every clip has turned out unreadable."""
        while True:
            self._fill()
            pb, fut = self._queue.popleft()
            results = fut.result() if fut is not None else self._load_batch(pb)
            self._rounds += 1
            self._epoch = pb.epoch
            good = [r for r in results if isinstance(r, Sample)]
            sent: list[tuple[str, str | None]] = []
            for r in results:
                if isinstance(r, MediaError):
                    with self._lock:
                        new = r.path not in self._bad
                        self._bad.add(r.path)
                    if new:
                        msg = f"{r}; skipped for the rest of the run"
                        self.warn(msg, str(r.path))
                        sent.append((msg, str(r.path)))
            if len(self._bad) >= len(self):
                raise DataExhausted("every clip and image has turned out unreadable; see the warnings above")
            if not good:
                continue  # the whole batch failed: this rank moves on to its next batch
            # keep the batch size: fill failed slots with the batch's own good samples (same bucket)
            samples = [r if isinstance(r, Sample) else good[k % len(good)] for k, r in enumerate(results)]
            return Batch(
                pixels=torch.stack([s.pixels for s in samples]),
                captions=[s.caption for s in samples],
                samples=samples,
                index=pb.index,
                epoch=pb.epoch,
                bucket=pb.bucket,
                warnings=sent,
            )

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return self.next_batch()

    def close(self) -> None:
        self._reset_stream()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ---------------------------------------------------------------- resume
    @property
    def next_global_batch(self) -> int:
        """Global batch index where the next round of next_batch() calls (all ranks) starts."""
        return self._start + self._rounds * self.world_size

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position in the global order; identical on every rank after the same number of calls."""
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "next_batch": self.next_global_batch,
            "epoch": self._epoch,
            "batch_size": self.batch_size,
            "fingerprint": self.fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` left off (any world size).  The saved seed wins over the job's.

        A state this version cannot read (an older format) is not fatal: the order restarts from the
        beginning with a warning — the weights and optimizer still resume.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "next_batch" not in state:
            self.warn(f"data order: cannot continue from the saved position {state!r} (another format); "
                      "the data order starts again from the beginning")
            self._reset_stream()
            self._start, self._rounds, self._epoch = 0, 0, 0
            return
        if int(state["seed"]) != self.seed or int(state["batch_size"]) != self.batch_size:
            self.warn(
                f"data order: the saved state used seed {state['seed']} and batch size {state['batch_size']}, "
                f"the job now says {self.seed} and {self.batch_size}; continuing with the saved seed"
            )
            self.seed = int(state["seed"])
            self.order = DataOrder(self.specs, self.seed, self.batch_size)
        if state.get("fingerprint") != self.fingerprint:
            self.warn(
                "data order: the dataset folders or their settings changed since this state was saved; "
                "training continues, but not in the same order as before"
            )
        self._reset_stream()
        self._start = int(state["next_batch"])
        self._rounds = 0
        self._epoch = int(state.get("epoch", 0))


class _Fixed:
    """A 'generator' that returns one pre-drawn uniform: keeps every sample's draws in a fixed order."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u


def _resize_uint8(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC)) for f in arr])


def split_entries(entries: list[ClipEntry], ds: DatasetSection, split: str) -> list[ClipEntry]:
    """This split's entries of one dataset (renumbered), by the hold-out rule of :mod:`engine.data.holdout`."""
    from dataclasses import replace

    from wanlora.engine.data.holdout import held_out

    if split not in ("train", "eval"):
        raise ValueError(f"unknown split {split!r}; expected train or eval")
    out = held_out([e.path.name for e in entries], is_eval=ds.is_eval, fraction=ds.eval_fraction)
    keep = [e for i, e in enumerate(entries) if (i in out) == (split == "eval")]
    return [replace(e, clip_index=k) for k, e in enumerate(keep)]


def build_dataset(
    job: Job,
    seed: int | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int | None = None,
    warn: Warn | None = None,
    num_workers: int = 0,
    split: str = "train",
) -> ClipDataset:
    """Scan every ``[[datasets]]`` folder and build this rank's batch stream.

    ``split = "train"`` leaves out the clips held for evaluation (:mod:`engine.data.holdout`);
    ``"eval"`` keeps only those (``engine.train.evaluate`` reads them, never as training batches).

    ``seed`` defaults to ``job.training.seed``; ``batch_size`` to ``job.training.batch_size``;
    ``num_workers`` > 0 decodes that many batches ahead in threads (decord releases the GIL).
    Raises DataExhausted (naming the folder) when a folder is missing or nothing is usable.
    """
    warn = warn or _default_warn
    if not job.datasets:
        raise DataExhausted("the job has no [[datasets]]; add one with folder = \"/path/to/clips\"")
    entries: list[list[ClipEntry]] = []
    for i, ds in enumerate(job.datasets):
        if split == "eval" and not (ds.is_eval or ds.eval_fraction > 0):
            entries.append([])  # nothing held out here: not even scanned
            continue
        ents = _entries_for(i, ds, warn)
        if not ents:
            raise DataExhausted(
                f"datasets[{i}]: {ds.folder} has no usable clip or image "
                "(videos .mp4 .mov .mkv .webm .avi, images .png .jpg .jpeg .webp); run `wanlora scan` on it"
            )
        entries.append(split_entries(ents, ds, split))
    if not any(entries):
        raise DataExhausted("every clip is held out for evaluation (is_eval / eval_fraction); set is_eval = false "
                            "on the dataset to train on" if split == "train" else
                            "no clip is held out for evaluation (no is_eval dataset; eval_fraction needs 2+ clips)")
    return ClipDataset(
        job, entries,
        job.training.seed if seed is None else seed,
        batch_size=job.training.batch_size if batch_size is None else batch_size,
        rank=rank, world_size=world_size, warn=warn, num_workers=num_workers,
    )
