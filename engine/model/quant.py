"""Quantised base weights for the experts: fp8 (our fp8-compute Linear) and nf4 (bitsandbytes).

Both are applied *after* the LoRA adapters are attached and only to the frozen ``base_layer`` Linears
inside the transformer blocks, so parameter names, the LoRA file format and resume are identical to bf16.
Quantising block by block while moving to the GPU keeps the peak at one bf16 block above the quantised
model: a 27 GiB bf16 expert loaded on the CPU lands on a 24 GB card as a 7.4 GiB nf4 one.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from wanlora.engine.model.fp8_linear import Fp8Linear, fp8_eligible
from wanlora.engine.model.meta import materialize_

Mode = Literal["none", "fp8", "nf4"]


class QuantizationUnavailable(Exception):
    """The requested quantisation cannot run here (e.g. nf4 without CUDA/bitsandbytes)."""


class Nf4Linear(nn.Module):
    """A frozen Linear stored as bitsandbytes NF4 (4 bits/weight, blockwise absmax); bf16 compute."""

    def __init__(self, lin: nn.Linear, device: torch.device) -> None:
        super().__init__()
        import bitsandbytes.functional as bnbf

        self.in_features, self.out_features = lin.in_features, lin.out_features
        w = lin.weight.data.to(device=device, dtype=torch.bfloat16)
        packed, self.quant_state = bnbf.quantize_4bit(w, quant_type="nf4", blocksize=64, compress_statistics=True)
        self.register_buffer("weight_packed", packed)
        self.register_buffer("bias", lin.bias.data.to(device, torch.bfloat16) if lin.bias is not None else None)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's own signature
        """``.to()`` moves the quantisation statistics with the packed weight: a low_vram expert parked on
        the CPU must not leave its absmax tables on the GPU."""
        out = super()._apply(fn, recurse)
        if self.quant_state is not None and self.quant_state.absmax.device != self.weight_packed.device:
            self.quant_state.to(self.weight_packed.device)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import bitsandbytes as bnb

        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return bnb.matmul_4bit(x, self.weight_packed.t(), bias=bias, quant_state=self.quant_state)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nf4"


def check_available(mode: Mode, device: torch.device) -> None:
    """Fail early, with the fix, when a quantisation mode cannot run on this machine."""
    if mode == "nf4":
        if device.type != "cuda":
            raise QuantizationUnavailable("quantization.transformer = \"nf4\" needs a CUDA GPU (bitsandbytes); "
                                          "use \"fp8\" or \"none\" on this machine")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise QuantizationUnavailable("quantization.transformer = \"nf4\" needs bitsandbytes: "
                                          "pip install 'wanlora[cuda]'") from None


def _ready(module: nn.Module, device: torch.device, recurse: bool = True) -> nn.Module:
    """A module whose weights are still on ``meta`` (the trial's random full-size model) gets them here, on
    ``device``, where a loaded one would be copied to: same placement order, same peak memory."""
    materialize_(module, device, recurse=recurse)
    return module


def _convert(lin: nn.Linear, mode: Mode, device: torch.device) -> nn.Module:
    _ready(lin, device)
    if mode == "fp8":
        return Fp8Linear.from_linear(lin.to(device))
    return Nf4Linear(lin, device)


def place_outside_blocks(transformer: nn.Module, device: torch.device) -> None:
    """Everything of ``transformer`` but its blocks on ``device`` (embeddings, norms, projections: small)."""
    for child in transformer.children():
        if child is not transformer.blocks:
            _ready(child, device).to(device)
    _ready(transformer, device, recurse=False)  # its own parameters (scale_shift_table), not the blocks' yet
    for p in transformer.parameters(recurse=False):
        p.data = p.data.to(device)


def quantize_block(block: nn.Module, mode: Mode, device: torch.device) -> int:
    """One block onto ``device`` with its frozen base Linears quantised; returns how many were.  The bf16
    weight of each Linear lives only while it is converted, so the peak is one Linear above the quantised
    block."""
    targets = [(parent, cname, c) for parent in block.modules() for cname, c in parent.named_children()
               if fp8_eligible(c) and not c.weight.requires_grad]
    for parent, cname, c in targets:
        setattr(parent, cname, _convert(c, mode, device))
    _ready(block, device).to(device)  # norms, LoRA params and anything not quantised
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return len(targets)


def quantize_and_place(transformer: nn.Module, mode: Mode, device: torch.device) -> int:
    """Move ``transformer`` to ``device``, quantising frozen block Linears on the way (call after LoRA).

    Returns how many Linears were quantised (0 for ``mode == "none"``, which is just ``.to(device)``).
    Layer offloading does the same block by block inside :class:`engine.model.offload.BlockStreamer`, which
    sends each block's weights to host memory before the next one is quantised.
    """
    if mode == "none":
        _ready(transformer, device).to(device)
        return 0
    check_available(mode, device)
    place_outside_blocks(transformer, device)
    return sum(quantize_block(block, mode, device) for block in transformer.blocks)


def model_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer (what the weights occupy wherever they are)."""
    seen: set[int] = set()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def quantize_text_encoder(text_encoder: nn.Module, mode: Mode, device: torch.device) -> int:
    """Weight-only quantisation of the (frozen, inference-only) UMT5 encoder, Linear by Linear onto ``device``.

    fp8 keeps one byte per weight and multiplies in the activations' dtype (UMT5's feed-forward activations
    have outliers that fp8 activations would clip); nf4 uses bitsandbytes.  UMT5-XXL: 10.6 GiB in bf16,
    ~5.6 GiB in fp8.
    """
    if mode == "none":
        _ready(text_encoder, device).to(device)
        return 0
    check_available(mode, device)
    targets = [(parent, name, child) for parent in text_encoder.modules() for name, child in parent.named_children()
               if fp8_eligible(child) and not child.weight.requires_grad]
    for parent, name, child in targets:
        _ready(child, device)
        new = Fp8Linear.from_linear(child.to(device), fp8_compute=False) if mode == "fp8" else Nf4Linear(child, device)
        setattr(parent, name, new)
    _ready(text_encoder, device).to(device)
    return len(targets)

