"""Before training (or ``wanlora cache``): fill the job's caches, then free what training no longer needs.

:func:`prepare_inputs` returns the two functions the loop calls every step — ``latents(batch)`` and
``embed(prompts)`` — backed by the caches where the job turns them on and by the live VAE / text encoder
elsewhere.  When every dataset's latents are cached the VAE is freed; with ``cache_text_embeddings`` or
``unload_text_encoder`` the text encoder is freed (previews reload the VAE for a moment if they need it).
Progress goes out as ``cache`` events: ``{what: latents|text, done, total, computed}``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from wanlora.engine.cache.keys import HashIndex, cache_dir_for, model_identity
from wanlora.engine.cache.latents import BatchLatents, FillStats, LatentCache, fill
from wanlora.engine.cache.text import Embedder, TextCache
from wanlora.engine.data.captions import sample_preservation_prompt, substitute_trigger, training_caption
from wanlora.engine.model.part_sources import file_variant

Emit = Callable[..., Any]  # emit("cache", **fields)


@dataclass
class Inputs:
    """What the loop needs per step, wherever it comes from."""

    latents: BatchLatents
    embed: Embedder
    cache_dirs: dict[int, Path] = field(default_factory=dict)
    latent_stats: FillStats | None = None
    text_total: int = 0
    text_computed: int = 0
    vae_freed: bool = False
    text_encoder_freed: bool = False


class _Throttled:
    """Progress → ``cache`` events, at most one per ``every_s`` (the first and the last always)."""

    def __init__(self, emit: Emit | None, what: str, every_s: float = 1.0) -> None:
        self.emit, self.what, self.every_s, self._last = emit, what, every_s, 0.0

    def __call__(self, done: int, total: int, computed: int) -> None:
        now = time.monotonic()
        if self.emit and (done in (0, total) or now - self._last >= self.every_s):
            self._last = now
            self.emit("cache", what=self.what, done=done, total=total, computed=computed)


def sample_prompts(job: Any) -> set[str]:
    """Preview prompts and negatives as the previews will encode them (trigger substituted)."""
    out: set[str] = set()
    for p in job.sample.prompts:
        out.add(substitute_trigger(p.prompt, job.job.trigger_word))
        out.add(p.neg or job.sample.negative_prompt)
    return out


def job_prompts(job: Any, dataset: Any) -> dict[int, set[str]]:
    """Every prompt the run can embed, per dataset: captions (as ``captions.training_caption`` makes them), the empty prompt,
    the DOP class prompts; the preview prompts and negatives go with dataset 0.  With ``unload_text_encoder``
    the captions are replaced by the trigger word and the empty prompt (as the guide says); the previews still
    get their own prompts (``Embedder.verbatim``)."""
    trig = job.job.trigger_word
    out: dict[int, set[str]] = {}
    inject = job.job.inject_trigger
    for d, entries in enumerate(dataset.entries):
        prompts = {""}
        reg = bool(job.datasets[d].is_regularization) if d < len(job.datasets) else False
        if job.training.unload_text_encoder:
            prompts.add(trig)
        else:
            for e in entries:
                prompts.add(training_caption(e.caption_raw, trig, inject=inject, is_regularization=reg))
                if job.training.dop.enabled:
                    prompts.add(sample_preservation_prompt(e.caption_raw, trig, job.training.dop.preservation_class,
                                                           inject=inject, is_regularization=reg))
        out[d] = prompts
    out.setdefault(0, set()).update(sample_prompts(job))
    return out


def _free(parts: Any, name: str) -> None:
    setattr(parts, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare_inputs(job: Any, parts: Any, dataset: Any, *, device: torch.device, dtype: torch.dtype,
                   emit: Emit | None = None, warn: Callable[..., None] | None = None,
                   fallback_root: Path | None = None, free: bool = True, only_root: bool = False) -> Inputs:
    """Fill the caches the job turns on; returns the per-step :class:`Inputs` (see the module docstring)."""
    tr = job.training
    use_text = tr.cache_text_embeddings or tr.unload_text_encoder
    cached_d = [d for d, ds in enumerate(job.datasets) if ds.cache_latents]
    dirs: dict[int, Path] = {}
    for d, ds in enumerate(job.datasets):
        if ds.cache_latents or (use_text and (d == 0 or not tr.unload_text_encoder)):
            dirs[d] = cache_dir_for(ds.folder, fallback_root, only_root=only_root)

    # Text first: the encoder (~6.5 GiB in fp8) leaves the GPU before the VAE encodes clips, so caching never
    # holds both (on a 12 GB card the two together with the VAE's activations reach the card's size).
    embed = Embedder(parts.tokenizer, parts.text_encoder, device=device, dtype=dtype)
    text_total = text_computed = 0
    text_freed = False
    if use_text:
        # the dtypes actually held (a quantised encoder holds fp8/int weights) identify how it computes
        held = [*parts.text_encoder.parameters(), *parts.text_encoder.buffers()]
        te_dtypes = ",".join(sorted({str(q.dtype).removeprefix("torch.") for q in held}))
        te_id = model_identity(parts.root, ["text_encoder", "tokenizer"], dtype=te_dtypes,
                               variant=file_variant(parts, "text_encoder"))
        wanted: dict[TextCache, set[str]] = {}
        by_dir: dict[Path, TextCache] = {}
        for d, prompts in job_prompts(job, dataset).items():
            folder = dirs.get(d, dirs[0])
            cache = by_dir.setdefault(folder, TextCache(folder, te_id))
            wanted.setdefault(cache, set()).update(prompts)
        if tr.unload_text_encoder:
            embed.fixed = job.job.trigger_word
        text_total, text_computed = embed.load(wanted, progress=_Throttled(emit, "text"))
        if emit:
            emit("cache", what="text", done=text_total, total=text_total, computed=text_computed,
                 reused=text_total - text_computed)
        if free:
            embed.drop_encoder()
            _free(parts, "text_encoder")
            text_freed = True
    caches: dict[int, LatentCache] = {}
    stats = None
    if cached_d:
        vae_dtype = str(next(parts.vae.parameters()).dtype).removeprefix("torch.")
        vae_id = model_identity(parts.root, ["vae"], dtype=vae_dtype, variant=file_variant(parts, "vae"))
        hashes: dict[Path, HashIndex] = {}
        for d in cached_d:
            h = hashes.setdefault(dirs[d], HashIndex(dirs[d]))
            caches[d] = LatentCache(dirs[d], vae_id, vae_dtype, h)
        stats = fill(dataset, caches, parts.vae, progress=_Throttled(emit, "latents"), warn=warn)
        if emit:
            emit("cache", what="latents", done=stats.total, total=stats.total, computed=stats.computed,
                 reused=stats.reused, failed=stats.failed, folders=sorted({str(dirs[d]) for d in cached_d}))
    latents = BatchLatents(caches, {d: ds.frame_sampling for d, ds in enumerate(job.datasets)})

    inputs = Inputs(latents=latents, embed=embed, cache_dirs=dirs, latent_stats=stats)
    inputs.text_total, inputs.text_computed, inputs.text_encoder_freed = text_total, text_computed, text_freed
    if free and cached_d and len(cached_d) == len(job.datasets) and (stats is None or stats.failed == 0):
        _free(parts, "vae")
        inputs.vae_freed = True
    return inputs


def cache_job(job: Any, *, device: torch.device | None = None, emit: Emit | None = None,
              warn: Callable[..., None] | None = None, fallback_root: Path | None = None) -> Inputs:
    """``wanlora cache``: fill the job's latent and text caches without loading any expert."""
    from wanlora.engine.data.dataset import build_dataset
    from wanlora.engine.model.load import load_parts
    from wanlora.engine.model.part_sources import job_files

    device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # as the trainer loads them
    use_text = job.training.cache_text_embeddings or job.training.unload_text_encoder
    dataset = build_dataset(job, warn=warn)
    try:
        parts = load_parts(job.model.name_or_path, [], dtype=dtype, device=device,
                           boundary_override=job.model.boundary_ratio, text_encoder=use_text,
                           vae_dtype=torch.float32, files=job_files(job.model))
        return prepare_inputs(job, parts, dataset, device=device, dtype=dtype, emit=emit, warn=warn,
                              fallback_root=fallback_root, free=False)
    finally:
        dataset.close()
