"""LoRA files that ComfyUI and diffusers both load: peft names ↔ original-Wan (``diffusion_model.``) names.

One file per expert.  Keys follow the original Wan module names that ComfyUI's Wan loader and diffusers'
``_convert_non_diffusers_wan_lora_to_diffusers`` both understand::

    diffusion_model.blocks.N.self_attn.{q,k,v,o}.lora_{A,B}.weight     (diffusers attn1.to_{q,k,v,out.0})
    diffusion_model.blocks.N.cross_attn.{q,k,v,o}.lora_{A,B}.weight    (diffusers attn2.…)
    diffusion_model.blocks.N.ffn.{0,2}.lora_{A,B}.weight               (diffusers ffn.net.0.proj, ffn.net.2)
    diffusion_model.blocks.N.<module>.alpha                            (scalar; scale = alpha / rank)

With the ``.alpha`` tensors a file keeps its scale in every loader (diffusers bakes α/r into A; ComfyUI
reads it), so alpha ≠ rank is safe.  The pure mapping functions are separate from the one writer, which
writes a temp file, fsyncs and renames so a reader never sees half a LoRA.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

PREFIX = "diffusion_model."

# diffusers sub-module → original Wan sub-module (inside blocks.N).
_TO_ORIGINAL = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}
_TO_DIFFUSERS = {v: k for k, v in _TO_ORIGINAL.items()}
_PEFT_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.(lora_[AB])\.weight$")
_ORIG_KEY = re.compile(r"^" + re.escape(PREFIX) + r"blocks\.(\d+)\.(.+)\.(lora_[AB]\.weight|alpha)$")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def peft_to_comfy(state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """peft/diffusers keys (``blocks.0.attn1.to_q.lora_A.weight``) → ComfyUI keys, plus one ``.alpha`` per module."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _PEFT_KEY.match(key.removeprefix("transformer."))
        if not m or m.group(2) not in _TO_ORIGINAL:
            raise KeyError(f"cannot map LoRA key {key!r} to the Wan/ComfyUI format")
        block, module, ab = m.groups()
        base = f"{PREFIX}blocks.{block}.{_TO_ORIGINAL[module]}"
        out[f"{base}.{ab}.weight"] = value
        out[f"{base}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return out


def comfy_to_peft(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Inverse of :func:`peft_to_comfy`: (peft-named weights, alpha per peft module name).

    Weights are returned unscaled; the alphas say how to scale them (a module without ``.alpha`` has
    alpha = rank, i.e. scale 1, as ComfyUI assumes).
    """
    weights: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    for key, value in state.items():
        m = _ORIG_KEY.match(key)
        if not m or m.group(2) not in _TO_DIFFUSERS:
            raise KeyError(f"not a Wan/ComfyUI LoRA key: {key!r}")
        block, module, tail = m.groups()
        name = f"blocks.{block}.{_TO_DIFFUSERS[module]}"
        if tail == "alpha":
            alphas[name] = float(value.item())
        else:
            weights[f"{name}.{tail}"] = value
    for key, value in weights.items():
        if key.endswith("lora_A.weight"):
            alphas.setdefault(key.removesuffix(".lora_A.weight"), float(value.shape[0]))
    return weights, alphas


def cast_state(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """Cast the LoRA matrices to ``save.dtype`` (bf16/fp16/fp32); ``.alpha`` scalars stay fp32."""
    dt = DTYPES[dtype]
    return {k: (v if k.endswith(".alpha") else v.detach().to("cpu", dt)).contiguous() for k, v in state.items()}


def wanlora_version() -> str:
    """The installed distribution's version ("0+unknown" when running from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wanlora")
    except PackageNotFoundError:
        return "0+unknown"


def lora_metadata(*, base_model: str, expert: str, rank: int, alpha: float, trigger: str, step: int,
                  recipe: str, modules: str, boundary_ratio: float, extra: dict[str, Any] | None = None
                  ) -> dict[str, str]:
    """safetensors header metadata (all strings): what a user or tool needs to know about the file."""
    meta = {
        "format": "wan22_i2v_lora",
        "wanlora_version": wanlora_version(),
        "base_model": base_model,
        "expert": expert,
        "rank": str(rank),
        "alpha": repr(float(alpha)),
        "target_modules": modules,
        "trigger_word": trigger,
        "step": str(step),
        "recipe": recipe,
        "boundary_ratio": repr(float(boundary_ratio)),
        "loader_hint": ("diffusers: pipe.load_lora_weights(high) / pipe.load_lora_weights(low, "
                        "load_into_transformer_2=True); ComfyUI: LoraLoaderModelOnly on the matching expert"),
    }
    if extra:
        meta["training"] = json.dumps(extra, sort_keys=True)
    return meta


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort on filesystems without directory fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_safetensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` to a temp sibling, fsync, rename over ``path``; returns ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)
    return path


def save_lora(path: Path, peft_state: dict[str, torch.Tensor], *, alpha: float, dtype: str,
              metadata: dict[str, str]) -> Path:
    """peft state dict → ComfyUI-format ``.safetensors`` at ``path`` in ``save.dtype``, written atomically."""
    return write_safetensors_atomic(path, cast_state(peft_to_comfy(peft_state, alpha), dtype), metadata)


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a LoRA file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta
