"""Frozen fp8 base weights that also *compute* in fp8, forward and backward.

torchao's fp8 weight-only path halves an expert's memory but dequantises to bf16 before every matmul (no
speed-up), and its dynamic fp8 path has no backward (``aten::_scaled_mm`` has no derivative).  A LoRA
trainer never needs the base weight's gradient, only the gradient w.r.t. the layer's input, which is one
more matmul with the same frozen weight:

    y  = x  @ Wᵀ        (x quantised e4m3, per-tensor, on the fly)
    dx = dy @ W         (dy quantised e5m2 — gradients need range more than mantissa)

so one custom autograd function with two ``torch._scaled_mm`` calls gives fp8 tensor-core speed in both
directions and stores the weight in one byte per parameter.  The LoRA branch (peft) stays in bf16 beside
it.  Scales are computed on the device (no host sync), which ``torch.compile`` fuses into the neighbouring
kernels.  Two scalings (``scaling``):

- ``"tensor"``: one scale per tensor (what ComfyUI's ``fp8_scaled`` files store for the weight).
- ``"row"``: one scale per token for the activation and gradient and one per output channel for the weight,
  so one outlier token or channel no longer costs every other one its precision.  The backward needs the
  weight's scale along the reduction dimension, which ``_scaled_mm`` cannot take; it is folded into the
  gradient before that is quantised, ``dx = (dy · s_w) @ W_q`` (exact), and the gradient stays e4m3
  there as in torchao's row-wise recipe (the per-row scale gives it the range e5m2 would).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
_FMAX = {E4M3: 448.0, E5M2: 57344.0}


def _quantize(t: torch.Tensor, dtype: torch.dtype, rowwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``t ≈ q.float() * scale``, amax mapped to the format's max: one fp32 scale, or one per row ``(rows, 1)``."""
    amax = t.detach().abs()
    amax = (amax.amax(dim=-1, keepdim=True) if rowwise else amax.amax()).float().clamp(min=1e-12)
    scale = amax / _FMAX[dtype]
    q = (t.float() / scale).clamp(-_FMAX[dtype], _FMAX[dtype]).to(dtype)
    return q, scale


def quantize_tensorwise(t: torch.Tensor, dtype: torch.dtype = E4M3) -> tuple[torch.Tensor, torch.Tensor]:
    """``t ≈ q.float() * scale`` with one fp32 scale for the whole tensor (amax maps to the format's max)."""
    return _quantize(t, dtype, rowwise=False)


class _Fp8Matmul(torch.autograd.Function):
    """y = x Wᵀ (+ b) on fp8 tensor cores; backward returns dx only (W and b are frozen).

    ``rowwise``: ``w_scale`` is ``(out_features, 1)`` and x and dy get one scale per row (module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                rowwise: bool):
        shape = x.shape
        x_q, x_scale = _quantize(x.reshape(-1, shape[-1]), E4M3, rowwise)
        b = bias.to(x.dtype) if bias is not None else None
        y = torch._scaled_mm(x_q, w_q.t(), scale_a=x_scale, scale_b=w_scale.t() if rowwise else w_scale,
                             bias=b, out_dtype=x.dtype)
        ctx.save_for_backward(w_q, w_scale)
        ctx.in_shape, ctx.rowwise = shape, rowwise
        return y.reshape(*shape[:-1], w_q.shape[0])

    @staticmethod
    def backward(ctx, gy: torch.Tensor):  # type: ignore[override]
        w_q, w_scale = ctx.saved_tensors
        g = gy.reshape(-1, gy.shape[-1])
        if ctx.rowwise:  # dx = (dy · s_w) @ W_q: the weight's per-channel scale lies along the reduction
            g_q, g_scale = _quantize(g.float() * w_scale.t(), E4M3, rowwise=True)
            w_s = torch.ones(1, w_q.shape[1], device=w_q.device, dtype=torch.float32)
        else:
            g_q, g_scale = _quantize(g, E5M2, rowwise=False)
            w_s = w_scale
        # _scaled_mm wants its second operand column-major: Wᵀ contiguous, viewed transposed, is W laid out so.
        gx = torch._scaled_mm(g_q, w_q.t().contiguous().t(), scale_a=g_scale, scale_b=w_s, out_dtype=gy.dtype)
        return gx.reshape(ctx.in_shape), None, None, None, None


_FP8_MM: dict[tuple[str, int | None], bool] = {}


def fp8_matmul_supported(device: torch.device) -> bool:
    """fp8 tensor-core GEMMs need compute capability ≥ 8.9 (Ada, Hopper, Blackwell); the CPU has them too.

    The answer is cached per device, but never written while ``torch.compile`` traces: inside a checkpointed
    block that write is a side effect dynamo cannot trace, and the whole checkpoint fell back out of the
    compiled graph (:func:`warm_fp8_check` fills the cache before the blocks are compiled)."""
    key = (device.type, device.index)
    hit = _FP8_MM.get(key)
    if hit is not None:
        return hit
    ok = torch.cuda.get_device_capability(device) >= (8, 9) if device.type == "cuda" else device.type == "cpu"
    if not torch.compiler.is_compiling():
        _FP8_MM[key] = ok
    return ok


def warm_fp8_check(root: nn.Module) -> None:
    """Answer :func:`fp8_matmul_supported` for every device ``root``'s fp8 layers live on, before tracing."""
    for m in root.modules():
        if isinstance(m, Fp8Linear):
            fp8_matmul_supported(m.weight_q.device)


Scaling = Literal["tensor", "row"]


class Fp8Linear(nn.Module):
    """Drop-in for a frozen ``nn.Linear``: weight stored e4m3, fp8 matmuls.

    ``weight_scale`` is a scalar (per-tensor scaling) or ``(out_features, 1)`` (row-wise); the shape says
    which matmul runs, so a state dict carries its scaling with it."""

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
                 *, fp8_compute: bool = True) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_q.shape
        self.fp8_compute = fp8_compute  # False: weight-only (one byte per weight, matmul in the input's dtype)
        self.register_buffer("weight_q", weight_q)
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("bias", bias)

    @property
    def scaling(self) -> Scaling:
        return "row" if self.weight_scale.numel() > 1 else "tensor"

    @classmethod
    def from_linear(cls, lin: nn.Linear, *, fp8_compute: bool = True, scaling: Scaling = "tensor") -> Fp8Linear:
        w_q, scale = _quantize(lin.weight.data, E4M3, rowwise=scaling == "row")
        bias = lin.bias.data.to(torch.bfloat16 if lin.weight.is_cuda else lin.bias.dtype) if lin.bias is not None else None
        return cls(w_q, scale, bias, fp8_compute=fp8_compute)

    @property
    def weight(self) -> torch.Tensor:
        """Dequantised view, for code that inspects ``.weight`` (shape, device); never used in forward."""
        return self.weight_q.float() * self.weight_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp8_compute and fp8_matmul_supported(x.device):
            return _Fp8Matmul.apply(x, self.weight_q, self.weight_scale, self.bias, self.scaling == "row")
        # Older GPUs (Ampere: RTX 3090, A6000, A100): keep the memory saving, compute in the input's dtype.
        w = (self.weight_q.to(x.dtype) * self.weight_scale.to(x.dtype))
        return nn.functional.linear(x, w, self.bias.to(x.dtype) if self.bias is not None else None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3, scaling={self.scaling}"


def fp8_eligible(lin: nn.Module) -> bool:
    """fp8 GEMMs need both weight dimensions divisible by 16."""
    return isinstance(lin, nn.Linear) and lin.in_features % 16 == 0 and lin.out_features % 16 == 0


def convert_to_fp8(root: nn.Module, select: Callable[[str, nn.Module], bool], scaling: Scaling = "tensor") -> int:
    """Replace every selected frozen ``nn.Linear`` under ``root`` (incl. peft ``base_layer``s) in place.

    Call *after* adding LoRA adapters, so peft wraps ordinary Linears and its adapters keep their own dtype.
    Returns how many layers were converted.
    """
    targets: list[tuple[nn.Module, str, nn.Linear]] = []
    for name, mod in root.named_modules():
        for child_name, child in mod.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if fp8_eligible(child) and not child.weight.requires_grad and select(full, child):
                targets.append((mod, child_name, child))  # type: ignore[arg-type]
    for parent, child_name, child in targets:
        setattr(parent, child_name, Fp8Linear.from_linear(child, scaling=scaling))
        del child
    return len(targets)
