"""The attention kernel the experts run: PyTorch's SDPA backends, or FlashAttention-4 where it is installed.

On an H200 at Wan's self-attention shapes (40 heads × 128, 11k–33k tokens, bf16), FlashAttention-4's Hopper
kernels (``flash_attn.cute``, the ``flash-attn-4`` wheel) take 13.0 / 35.0 / 128.2 ms forward + backward
against cuDNN SDPA's 16.3 / 41.0 / 147.6 ms, with the same output (cosine 0.999995; bench/attention.py,
BENCHMARKS.md §0).  Attention is 40–64 % of a trainer step there, so ``advanced.attention_backend = "auto"``
takes FA4 when it can and cuDNN SDPA otherwise, saying which in one line.

FA4 runs as one PyTorch custom op (``wanlora::flash_attention``, its backward a second op) so that
``torch.compile`` traces the block through it in one graph, and the selective-checkpoint policy can keep
its output like SDPA's (:mod:`engine.train.acceleration`).  Diffusers routes the Wan processors to it
through its ``flash_4_hub`` backend slot, with the kernel given here instead of fetched from the Hub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# What the two ops call: (q, k, v, scale) -> (out, lse) and (dout, q, k, v, out, lse, scale) -> (dq, dk, dv);
# tensors (batch, tokens, heads, dim), lse (batch, heads, tokens) in fp32.  FA4 on CUDA, or another pair
# with the same contract (the tests use a plain PyTorch one on the CPU).
_IMPL: dict[str, Callable[..., Any]] = {}


@torch.library.custom_op("wanlora::flash_attention", mutates_args=())
def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = _IMPL["fwd"](q, k, v, scale)
    return out.contiguous(), lse.contiguous()  # the fake below promises contiguous outputs


@flash_attention.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    b, s, h, _d = q.shape
    return q.new_empty(q.shape), q.new_empty((b, h, s), dtype=torch.float32)


@torch.library.custom_op("wanlora::flash_attention_backward", mutates_args=())
def flash_attention_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             out: torch.Tensor, lse: torch.Tensor, scale: float
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = _IMPL["bwd"](dout, q, k, v, out, lse, scale)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


@flash_attention_backward.register_fake
def _(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
      lse: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    q, k, v, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale = scale


def _backward(ctx: Any, dout: torch.Tensor, _dlse: torch.Tensor | None) -> tuple:
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = flash_attention_backward(dout.contiguous(), q, k, v, out, lse, ctx.scale)
    return dq, dk, dv, None


flash_attention.register_autograd(_backward, setup_context=_setup_context)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float | None = None,
              causal: bool = False, **_: Any) -> torch.Tensor:
    """Diffusers' kernel-function signature (``q, k, v, softmax_scale, causal``) over the custom op."""
    if causal:
        raise ValueError("wanlora's flash attention is for Wan's non-causal attention only")
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    return flash_attention(q, k, v, float(scale))[0]


def _fa4_impl() -> dict[str, Callable[..., Any]]:
    from flash_attn.cute.interface import _flash_attn_bwd, _flash_attn_fwd

    def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        res = _flash_attn_fwd(q, k, v, softmax_scale=scale, causal=False, return_lse=True)
        return res[0], res[1]

    def bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
            lse: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dq, dk, dv = _flash_attn_bwd(q, k, v, out, dout, lse, scale, False)[:3]
        return dq, dk, dv

    return {"fwd": fwd, "bwd": bwd}


def fa4_unavailable(device: torch.device) -> str | None:
    """Why FlashAttention-4 cannot run here (None when it can): no CUDA, not Hopper/Blackwell, not installed."""
    if device.type != "cuda":
        return "needs a CUDA GPU"
    major, minor = torch.cuda.get_device_capability(device)
    if major not in (9, 10, 11, 12):
        return f"needs a Hopper or Blackwell GPU (this one is sm_{major}{minor})"
    key = str(device)
    if key not in _CHECKED:
        _CHECKED[key] = _try_fa4(device)
    return _CHECKED[key]


_CHECKED: dict[str, str | None] = {}


def _try_fa4(device: torch.device) -> str | None:
    """Import FA4 and run one small forward + backward: a wheel built for another CUDA than the driver's
    imports fine and fails at its first kernel, which must cost a note, not the run."""
    try:
        impl = _fa4_impl()
    except Exception as e:  # noqa: BLE001 — any import failure means: not usable here
        return f"is not installed ({type(e).__name__}: {str(e)[:120]}; pip install -e '.[cuda]')"
    try:
        q, k, v = (torch.randn(1, 128, 1, 128, device=device, dtype=torch.bfloat16) for _ in range(3))
        out, lse = impl["fwd"](q, k, v, 128**-0.5)
        impl["bwd"](torch.ones_like(out), q, k, v, out, lse, 128**-0.5)
        torch.cuda.synchronize(device)
    except Exception as e:  # noqa: BLE001
        return f"failed a test call here ({type(e).__name__}: {str(e)[:120]})"
    return None


def route_to_flash(model: torch.nn.Module, impl: dict[str, Callable[..., Any]]) -> int:
    """Send every attention processor of ``model`` to :func:`attention` through diffusers' ``flash_4_hub``
    slot, with ``impl`` behind the op; returns how many processors now use it."""
    from diffusers.models.attention_dispatch import _HUB_KERNELS_REGISTRY, AttentionBackendName

    _IMPL.update(impl)
    backend = AttentionBackendName.FLASH_4_HUB
    _HUB_KERNELS_REGISTRY[backend].kernel_fn = attention  # given here: nothing is fetched from the Hub
    n = 0
    for module in model.modules():
        proc = getattr(module, "processor", None)
        if proc is not None and hasattr(proc, "_attention_backend"):
            proc._attention_backend = backend
            n += 1
    return n


# advanced.attention_backend → diffusers' SDPA backend names (None: diffusers' default, native SDPA)
SDPA_BACKENDS = {"native": "native", "cudnn": "_native_cudnn", "flash": "_native_flash",
                 "efficient": "_native_efficient", "math": "_native_math"}


def fa4_head_dim_unsupported(head_dim: int) -> str | None:
    """Why FA4's kernels refuse this head size (None when they take it): they need a multiple of 8 from 8 to
    256.  Wan's 128 always fits; a small or custom model may not, and FA4 would fail at its first step."""
    if head_dim % 8 == 0 and 8 <= head_dim <= 256:
        return None
    return f"does not run head dimension {head_dim} (it needs a multiple of 8 from 8 to 256)"


def choose(setting: str, device: torch.device, head_dim: int | None = None) -> tuple[str, str | None]:
    """(kernel to use, one-line note or None) for ``advanced.attention_backend``.

    ``auto`` is FA4 where it runs, else PyTorch's SDPA as diffusers calls it by default (cuDNN on Hopper);
    ``flash4`` where FA4 cannot run (no GPU for it, not installed, or a ``head_dim`` its kernels refuse)
    falls back the same way.  On CUDA the fallback is said in one line.
    """
    if setting not in ("auto", "flash4"):
        return setting, None
    why = fa4_head_dim_unsupported(head_dim) if head_dim is not None else None
    why = why or fa4_unavailable(device)
    if why is None:
        return "flash4", None
    if setting == "flash4" or device.type == "cuda":
        return "native", f"FlashAttention-4 {why}: attention runs on PyTorch SDPA (cuDNN on Hopper)"
    return "native", None


def apply(model: torch.nn.Module, kernel: str) -> None:
    """Put ``kernel`` (from :func:`choose`) in force on every attention processor of ``model``."""
    if kernel == "flash4":
        route_to_flash(model, _fa4_impl())
    elif kernel in SDPA_BACKENDS and kernel != "native":  # native: diffusers' default, nothing to set
        model.set_attention_backend(SDPA_BACKENDS[kernel])


__all__ = ["flash_attention", "attention", "fa4_unavailable", "fa4_head_dim_unsupported", "route_to_flash", "choose", "apply", "SDPA_BACKENDS"]
