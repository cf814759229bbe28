"""Latent cache: VAE latents of every training clip (multi-frame video too) and its 20-channel I2V condition.

ai-toolkit refuses latent caching for multi-frame data and re-encodes the first-frame condition (a whole
clip of F frames through the VAE) on every step; here both are encoded once and reused by every job:

- one entry per clip × bucket (F, H, W) × frame selection × flip variant, a safetensors file holding
  ``x0`` ``[16, T, h, w]`` (normalised target latents) and ``cond`` ``[20, T, h, w]`` (mask + condition
  latents) exactly as :mod:`engine.model.conditioning` computes them live (fp32);
- keyed by the clip's content hash plus everything that changes the result (see :meth:`LatentCache.key`);
  a flipped sample is its own entry because flipping latents is not the same as encoding flipped pixels;
- ``frame_sampling = "fps"`` with caching draws among fixed windows (:func:`engine.data.frames.fps_windows`)
  instead of a free offset, so every selection the run can make is known and encoded up front;
- written atomically (temp + rename): a killed run leaves whole entries or none.

:func:`fill` encodes what is missing (with progress), :class:`BatchLatents` serves a batch's latents.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from wanlora.engine.cache.keys import HashIndex, entry_key
from wanlora.engine.model.conditioning import condition_latents, encode_latents

Progress = Callable[[int, int, int], None]  # (done, total, computed so far)


@dataclass(frozen=True)
class LatentSpec:
    """Which pixels an entry encodes: file, bucket, frames, flips (+ how the frames were chosen)."""

    path: Path
    kind: str  # "video" | "image"
    bucket: tuple[int, int, int]  # (F, H, W)
    frame_indices: tuple[int, ...]
    frame_sampling: str
    flip_x: bool = False
    flip_y: bool = False


class LatentCache:
    """The latent entries of one dataset folder for one VAE (identity + dtype)."""

    def __init__(self, folder: Path, vae_id: str, vae_dtype: str, hashes: HashIndex | None = None) -> None:
        self.folder = Path(folder)
        self.dir = self.folder / "latents"
        self.vae_id, self.vae_dtype = vae_id, vae_dtype
        self.hashes = hashes or HashIndex(self.folder)

    def key(self, spec: LatentSpec) -> str:
        return entry_key(
            kind="latents", file=self.hashes.digest(spec.path), media=spec.kind, bucket=list(spec.bucket),
            frames=list(spec.frame_indices), num_frames=spec.bucket[0],
            frame_sampling=spec.frame_sampling if spec.kind == "video" else "image",
            flip_x=spec.flip_x, flip_y=spec.flip_y, vae=self.vae_id, dtype=self.vae_dtype,
        )

    def file_for(self, spec: LatentSpec) -> Path:
        return self.dir / f"{self.key(spec)}.safetensors"

    def has(self, spec: LatentSpec) -> bool:
        return self.file_for(spec).is_file()

    def get(self, spec: LatentSpec) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(x0, cond) of an entry, or None when it is not cached (or unreadable: then it is recomputed)."""
        from safetensors.torch import load_file

        f = self.file_for(spec)
        if not f.is_file():
            return None
        try:
            t = load_file(str(f))
            return t["x0"], t["cond"]
        except Exception:  # a damaged entry is a miss, never a crash
            return None

    def put(self, spec: LatentSpec, x0: torch.Tensor, cond: torch.Tensor) -> Path:
        from safetensors.torch import save_file

        f = self.file_for(spec)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f".{f.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        meta = {"source": str(spec.path), "bucket": "x".join(map(str, spec.bucket)),
                "frames": ",".join(map(str, spec.frame_indices)), "flip": f"{int(spec.flip_x)}{int(spec.flip_y)}",
                "vae": self.vae_id, "dtype": self.vae_dtype}
        try:
            save_file({"x0": x0.detach().to("cpu").contiguous(), "cond": cond.detach().to("cpu").contiguous()},
                      str(tmp), metadata=meta)
            os.replace(tmp, f)
        finally:
            if tmp.exists():
                tmp.unlink()
        return f


def encode_sample(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0 ``[16,T,h,w]``, cond ``[20,T,h,w]``) of one sample's pixels ``[3,F,H,W]`` — the live loop's math."""
    px = pixels[None]
    return encode_latents(vae, px)[0], condition_latents(vae, px[:, :, 0], px.shape[2])[0]


def spec_of_sample(sample: Any, frame_sampling: str) -> LatentSpec:
    """The entry a loaded :class:`engine.data.dataset.Sample` corresponds to."""
    return LatentSpec(Path(sample.path), _kind_of(sample.path), tuple(sample.bucket), tuple(sample.frame_indices), frame_sampling,
                      bool(sample.flipped_x), bool(sample.flipped_y))


def _kind_of(path: Path) -> str:
    from wanlora.engine.data.decode import media_kind

    return media_kind(path) or "video"


def planned_specs(dataset: Any, d: int) -> list[tuple[LatentSpec, Any]]:
    """Every entry dataset ``d`` can ask for: clip × its buckets × frame selections × enabled flip variants."""
    cfg = dataset.configs[d]
    flips_x = (False, True) if cfg.flip_x else (False,)
    flips_y = (False, True) if cfg.flip_y else (False,)
    out = []
    for e, buckets in zip(dataset.entries[d], dataset.specs[d].buckets, strict=True):
        for bucket in dict.fromkeys(buckets):  # two resolutions may share a bucket
            for sel in dataset.frame_choices(e, bucket[0]):
                for fx, fy in itertools.product(flips_x, flips_y):
                    spec = LatentSpec(e.path, e.kind, tuple(bucket), tuple(sel.indices), cfg.frame_sampling, fx, fy)
                    out.append((spec, e))
    return out


@dataclass
class FillStats:
    total: int = 0
    computed: int = 0
    reused: int = 0
    failed: int = 0


def fill(dataset: Any, caches: dict[int, LatentCache], vae, *, progress: Progress | None = None,
         warn: Callable[..., None] | None = None, prefetch: int = 2) -> FillStats:
    """Encode every planned entry of the cached datasets that is not on disk yet.

    Decoding runs ``prefetch`` entries ahead in threads while the VAE encodes; an unreadable clip is
    reported through ``warn`` (the data layer skips it at training time anyway).
    """
    from wanlora.engine.data.decode import MediaError

    work = [(d, spec, e) for d in sorted(caches) for spec, e in planned_specs(dataset, d)]
    stats = FillStats(total=len(work))
    missing = []
    for d, spec, e in work:
        if caches[d].has(spec):
            stats.reused += 1
        else:
            missing.append((d, spec, e))
    done = stats.reused
    if progress:
        progress(done, stats.total, 0)

    def decode(item: tuple[int, LatentSpec, Any]) -> torch.Tensor | MediaError:
        _d, spec, e = item
        try:
            return dataset.pixels(e, spec.bucket, spec.frame_indices, spec.flip_x, spec.flip_y)
        except MediaError as err:
            return err

    with ThreadPoolExecutor(max(1, prefetch), thread_name_prefix="wanlora-cache") as pool:
        queue: deque = deque()
        it: Iterator = iter(missing)
        for item in itertools.islice(it, max(1, prefetch)):
            queue.append((item, pool.submit(decode, item)))
        while queue:
            (d, spec, _e), fut = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(decode, nxt)))
            px = fut.result()
            if isinstance(px, MediaError):
                stats.failed += 1
                if warn:
                    warn(f"{px}; not cached", str(spec.path))
            else:
                x0, cond = encode_sample(vae, px)
                caches[d].put(spec, x0, cond)
                stats.computed += 1
            done += 1
            if progress:
                progress(done, stats.total, stats.computed)
    for c in {id(c): c for c in caches.values()}.values():
        c.hashes.save()
    return stats


class BatchLatents:
    """A batch's (x0, cond): cached datasets from disk, the others through the VAE (batched, as before)."""

    def __init__(self, caches: dict[int, LatentCache], frame_sampling: dict[int, str]) -> None:
        self.caches, self.frame_sampling = caches, frame_sampling
        self.misses = 0  # entries encoded during training (a clip changed after caching)

    def __call__(self, batch: Any, vae, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        samples = batch.samples
        if not any(s.dataset_index in self.caches for s in samples):
            pixels = batch.pixels.to(device)
            return encode_latents(vae, pixels), condition_latents(vae, pixels[:, :, 0], pixels.shape[2])
        xs, cs = [], []
        for s in samples:
            cache = self.caches.get(s.dataset_index)
            got = None
            if cache is not None:
                spec = spec_of_sample(s, self.frame_sampling[s.dataset_index])
                got = cache.get(spec)
            if got is None:
                if vae is None:
                    raise RuntimeError(f"{s.path}: its latents are not cached and the VAE was freed; "
                                       "run `wanlora cache` again or turn cache_latents off")
                got = encode_sample(vae, s.pixels.to(device))
                if cache is not None:
                    cache.put(spec, *got)
                    self.misses += 1
            xs.append(got[0])
            cs.append(got[1])
        return torch.stack(xs).to(device), torch.stack(cs).to(device)
