"""Eval loss per expert: held-out clips, fixed timesteps, fixed noise — comparable across checkpoints.

Training loss is drawn at a random timestep with random noise each step, so two checkpoints cannot be
ranked by it.  The eval loss removes both sources of variance:

- **data**: the clips held out by :mod:`engine.data.holdout` (``is_eval`` datasets, ``eval_fraction``),
  never in a training batch; each read deterministically (frame offset 0, no flips, no caption dropout, the
  dataset's smallest resolution), encoded once (latents, I2V condition, caption rows) and stored in
  ``JOB_DIR/eval/inputs.safetensors`` so a restart or ``wanlora compare`` days later uses the very same
  tensors (also on another device, or after the text encoder was freed);
- **timesteps**: each expert's range (high ``[b·1000, 1000]``, low ``[0, b·1000)``, b = boundary) is cut
  into :data:`BANDS` equal bands; the loss is measured at every band's centre ``t``;
- **noise**: one noise tensor per clip, drawn on the CPU from ``(EVAL_SEED, file name)`` — the same on any
  device, in any run, whatever other clips are added.

Loss = the plain flow-matching MSE (no DOP, no differential guidance) ``‖v_θ(x_t, t) − (ε − x₀)‖²`` with
``x_t = (1 − σ)x₀ + σε``, ``σ = t/1000``.  Per expert: the loss of each band (mean over clips) and their mean.

The weights evaluated are always a LoRA *file's* (at save time the just-written file is read back into
the live adapter for the measurement, then the live weights are restored), so a loss recomputed later from
the same file by :func:`evaluate_files` is identical — the same code on the same tensors.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from wanlora.engine.config.experts import HIGH, LOW
from wanlora.engine.model.conditioning import model_input
from wanlora.engine.train.objective import flow_target, mse_loss, noisy_latents

BANDS = 4
EVAL_SEED = 20250701
EVAL_DIR = "eval"
INPUTS_FILE = "inputs.safetensors"
FORMAT = 1

Warn = Callable[..., None]


# ---------------------------------------------------------------- pure pieces
@dataclass(frozen=True)
class Band:
    lo: float
    hi: float

    @property
    def t(self) -> float:
        """The band's centre: the one timestep the loss is measured at."""
        return (self.lo + self.hi) / 2.0


def expert_bands(expert: str, boundary_ratio: float, n: int = BANDS) -> list[Band]:
    """``n`` equal bands covering the expert's timestep range, high-t first."""
    b = float(boundary_ratio) * 1000.0
    lo, hi = (b, 1000.0) if expert == HIGH else (0.0, b)
    w = (hi - lo) / n
    return [Band(hi - (k + 1) * w, hi - k * w) for k in range(n)]


def noise_seed(key: str) -> int:
    """The CPU generator seed of one eval clip's noise."""
    h = hashlib.blake2b(f"{EVAL_SEED}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def fixed_noise(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """fp32 standard normal noise for clip ``key``, drawn on the CPU (device independent)."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(noise_seed(key)), dtype=torch.float32)


# ---------------------------------------------------------------- the eval set
@dataclass
class EvalItem:
    key: str  # "<dataset index>/<file name>": the noise seed and the row's name in reports
    caption: str
    x0: torch.Tensor  # [16, T, h, w] fp32, CPU
    cond: torch.Tensor  # [20, T, h, w] fp32, CPU
    rows: torch.Tensor  # [n, D] caption rows (real tokens only), CPU


@dataclass
class EvalSet:
    items: list[EvalItem]
    describe: list[dict[str, Any]]  # what each item was made from (files, sizes, buckets, captions)
    path: Path | None = None
    reused: bool = False

    def __len__(self) -> int:
        return len(self.items)


def wants_eval(job: Any) -> bool:
    """The job holds clips out for evaluation."""
    return any(d.is_eval or d.eval_fraction > 0 for d in job.datasets)


def plan_items(job: Any, warn: Warn) -> tuple[Any, list[tuple[Any, dict[str, Any]]]]:
    """The eval split and, per clip, how it is read (bucket, frames, caption)."""
    from wanlora.engine.data.buckets import bucket_for
    from wanlora.engine.data.captions import final_caption
    from wanlora.engine.data.dataset import build_dataset

    data = build_dataset(job, warn=warn, split="eval", batch_size=1)
    plan = []
    for d, ents in enumerate(data.entries):
        ds = job.datasets[d]
        res = min(ds.resolutions)
        for e in ents:
            f = ds.num_frames if e.kind == "video" else 1
            w, h = bucket_for(e.width, e.height, res)
            sel = data.frame_choices(e, f)[0]
            caption = final_caption(e.caption_raw, job.job.trigger_word, False, inject=job.job.inject_trigger,
                                    is_regularization=ds.is_regularization)  # as training captions it
            if job.training.unload_text_encoder and caption.strip():
                caption = job.job.trigger_word  # as training embeds it
            st = e.path.stat()
            plan.append((e, {"key": f"{d}/{e.path.name}", "file": str(e.path), "size": st.st_size,
                             "mtime_ns": st.st_mtime_ns, "bucket": [f, h, w], "frames": list(sel.indices),
                             "caption": caption}))
    return data, plan


def inputs_path(job_dir: Path) -> Path:
    return Path(job_dir) / EVAL_DIR / INPUTS_FILE


def load_inputs(path: Path) -> EvalSet | None:
    """The stored eval set, or None when there is none (or it is of another format)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        if meta.get("format") != str(FORMAT):
            return None
        describe = json.loads(meta.get("items", "[]"))
        items = [EvalItem(key=d["key"], caption=d["caption"], x0=f.get_tensor(f"x0.{i}"),
                          cond=f.get_tensor(f"cond.{i}"), rows=f.get_tensor(f"rows.{i}"))
                 for i, d in enumerate(describe)]
    return EvalSet(items, describe, Path(path), reused=True)


def build_eval_set(job: Any, *, vae: Any, tokenizer: Any, text_encoder: Any, job_dir: Path | None,
                   warn: Warn, save: bool = True) -> EvalSet | None:
    """The job's eval set: reused from ``JOB_DIR/eval/inputs.safetensors`` when it describes the same clips,
    else encoded with ``vae`` / ``text_encoder`` (loaded by the caller) and stored.  None without eval data.
    """
    from wanlora.engine.cache.latents import encode_sample
    from wanlora.engine.cache.text import encode_rows
    from wanlora.engine.data.dataset import DataExhausted

    if not wants_eval(job):
        return None
    try:
        data, plan = plan_items(job, warn)
    except DataExhausted as e:
        warn(f"eval loss: {e}; no eval loss is measured")
        return None
    try:
        describe = [p for _e, p in plan]
        path = inputs_path(job_dir) if job_dir is not None else None
        if path is not None:
            stored = load_inputs(path)
            if stored is not None and stored.describe == describe:
                return stored
        if vae is None or text_encoder is None:
            raise RuntimeError("the eval inputs must be encoded but the VAE or text encoder is not loaded")
        items = []
        for e, p in plan:
            px = data.pixels(e, tuple(p["bucket"]), tuple(p["frames"]))
            x0, cond = encode_sample(vae, px)
            rows = encode_rows(tokenizer, text_encoder, [p["caption"]])[0]
            items.append(EvalItem(p["key"], p["caption"], x0.cpu().float(), cond.cpu().float(), rows.cpu()))
        out = EvalSet(items, describe, path)
        if save and path is not None:
            _save(out, path)
        return out
    finally:
        data.close()


def _save(es: EvalSet, path: Path) -> None:
    from wanlora.engine.model.lora_format import write_safetensors_atomic

    tensors = {}
    for i, it in enumerate(es.items):
        tensors[f"x0.{i}"] = it.x0.contiguous()
        tensors[f"cond.{i}"] = it.cond.contiguous()
        tensors[f"rows.{i}"] = it.rows.contiguous()
    write_safetensors_atomic(path, tensors, {"format": str(FORMAT), "items": json.dumps(es.describe)})


# ---------------------------------------------------------------- the measurement
@torch.no_grad()
def expert_loss(model: Any, es: EvalSet, expert: str, boundary_ratio: float, *, device: torch.device,
                dtype: torch.dtype, max_length: int = 512) -> dict[str, Any]:
    """``{loss, bands: [{lo, hi, t, loss}]}`` of one expert on the eval set (model as it is now)."""
    from wanlora.engine.cache.text import pad_rows

    # the model's mode is left as it is (Wan has no dropout; a mode switch would recompile compiled blocks)
    bands = []
    for band in expert_bands(expert, boundary_ratio):
        total = 0.0
        for it in es.items:
            x0 = it.x0[None].to(device)
            noise = fixed_noise(it.key, tuple(x0.shape)).to(device)
            t = torch.tensor([band.t], dtype=torch.float32, device=device)
            xt = noisy_latents(x0, noise, t / 1000.0)
            inp = model_input(xt, it.cond[None].to(device), dtype)
            emb = pad_rows([it.rows], max_length, device=device, dtype=dtype)
            pred = model(inp, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
            total += float(mse_loss(pred, flow_target(x0, noise)).item())
        bands.append({"lo": round(band.lo, 3), "hi": round(band.hi, 3), "t": round(band.t, 3),
                      "loss": total / len(es.items)})
    return {"loss": sum(b["loss"] for b in bands) / len(bands), "bands": bands}


def file_state(path: Path) -> dict[str, torch.Tensor]:
    """A LoRA file's weights with peft names (what :func:`engine.model.lora.load_lora_state_dict` takes)."""
    from wanlora.engine.model.lora_format import comfy_to_peft, read_lora

    tensors, _meta = read_lora(path)
    weights, _alphas = comfy_to_peft(tensors)
    return weights


@contextmanager
def weights_of(model: Any, path: Path) -> Iterator[None]:
    """Temporarily put a LoRA file's weights into ``model``'s adapter; the live weights come back after."""
    from wanlora.engine.model.lora import load_lora_state_dict, lora_state_dict

    saved = {k: v.detach().clone() for k, v in lora_state_dict(model).items()}
    load_lora_state_dict(model, file_state(path))
    try:
        yield
    finally:
        load_lora_state_dict(model, saved)


def evaluate_files(es: EvalSet, models: dict[str, Any], files: dict[str, Path], boundary_ratio: float, *,
                   device: torch.device, dtype: torch.dtype,
                   place: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Eval loss of each expert's LoRA file (``files``: expert → file) on the eval set.

    ``models[expert]`` is that expert's transformer with the job's LoRA attached; ``place(expert)`` puts it
    on the device first (low_vram).  Returns ``{experts: {expert: {loss, bands, file}}, items, eval_s}``.
    """
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    for name in (HIGH, LOW):
        if name not in files or name not in models:
            continue
        if place is not None:
            place(name)
        with weights_of(models[name], files[name]):
            res = expert_loss(models[name], es, name, boundary_ratio, device=device, dtype=dtype)
        out[name] = {**res, "file": str(files[name])}
    return {"experts": out, "items": len(es), "bands": BANDS, "eval_s": round(time.perf_counter() - t0, 3)}


def summary(result: dict[str, Any], step: int) -> dict[str, Any]:
    """The short form for ``status.json``: step and one loss per expert."""
    return {"step": step, **{n: round(r["loss"], 6) for n, r in result.get("experts", {}).items()}}


# ---------------------------------------------------------------- the trainer's two calls
def setup_eval(trainer: Any) -> EvalSet | None:
    """At setup (before the caches free the VAE / text encoder): the eval set, on rank 0."""
    job = trainer.job
    if not trainer.dist.is_main or not wants_eval(job):
        return None
    parts = trainer.parts
    es = build_eval_set(job, vae=parts.vae, tokenizer=parts.tokenizer, text_encoder=parts.text_encoder,
                        job_dir=trainer.job_dir, warn=trainer._data_warning)
    if es is not None:
        trainer.events.emit("state", state="eval_ready", items=len(es), reused=es.reused, path=str(es.path),
                            bands=BANDS)
        if job.advanced.fsdp:
            trainer.events.emit("warning", message="eval loss is not measured during training with advanced.fsdp "
                                "(the sharded experts need every GPU); run `wanlora compare JOB` afterwards")
            return None
    return es


def eval_at_save(trainer: Any, written: list[Path], final: bool) -> dict[str, Any] | None:
    """After a checkpoint pair is written: its eval loss per expert → an ``eval`` event + ``status.json``."""
    from wanlora.engine.train.experts import place_experts

    es = getattr(trainer, "eval_set", None)
    if es is None or not written:
        return None
    files = dict(zip(trainer.experts, written, strict=True))
    low_vram = trainer.job.model.low_vram and not trainer._offloading
    result = evaluate_files(es, {n: ex.model for n, ex in trainer.experts.items()}, files,
                            trainer.parts.boundary_ratio, device=trainer.device, dtype=trainer.dtype,
                            place=lambda n: place_experts(trainer.experts, n, trainer.device, low_vram))
    trainer.events.emit("eval", step=trainer.step, final=final, files=[str(p) for p in written], **result)
    trainer.status.update(eval=summary(result, trainer.step))
    return result
