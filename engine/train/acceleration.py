"""Speed levers for the expert transformers, each measured in bench/step.py (see BENCHMARKS.md).

- fp8 compute for the frozen base (:mod:`engine.model.fp8_linear`): half the weight memory *and* fp8
  tensor-core matmuls forward and backward.
- per-block ``torch.compile``: fuses the elementwise/LayerNorm glue between matmuls (~1/3 of eager time).
- selective activation checkpointing: checkpoint only as many blocks as memory requires; every block left
  un-checkpointed saves its forward recompute.  Inside the checkpointed blocks the self-attention output
  is kept (``save_attention``): at long sequences attention is most of the recompute and its output is
  only ``tokens × 5120`` values per block.

All three keep parameter names unchanged, so LoRA state dicts, checkpoints and resume are unaffected.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts
from wanlora.engine.model import attention as _attention  # noqa: F401 — registers the FA4 op the policy keeps
from wanlora.engine.model.fp8_linear import Scaling, convert_to_fp8, warm_fp8_check

GIB = 1024**3
# Activation memory of one Wan 2.2 A14B block left un-checkpointed, per video token at batch 1 (bf16,
# compiled).  Measured on an H100 (bench/results/2026-11-21-h100-levers.jsonl: 1.87 GiB per block at
# 11 264 tokens, 2.4 GiB at 17 160) and rounded up.
BLOCK_ACT_BYTES_PER_TOKEN = 0.17 * 1024**2
# What a fully checkpointed expert keeps besides its weights, per 1000 tokens (block inputs, optimizer,
# loss): 8.3 GiB at 11 264 tokens and 12.5 GiB at 17 160 in the same run.
GC_FLOOR_BYTES_PER_1K_TOKENS = 0.74 * GIB


def video_tokens(num_frames: int, height: int, width: int) -> int:
    """Tokens the transformer sees: latent frames × (H/16) × (W/16) (VAE /8, patch 2)."""
    return ((num_frames - 1) // 4 + 1) * (height // 16) * (width // 16)


def apply_fp8(transformer: nn.Module, scaling: Scaling = "tensor") -> int:
    """fp8 weights + fp8 matmuls for every frozen Linear inside the transformer blocks."""
    return convert_to_fp8(transformer, lambda name, _m: name.startswith("blocks."), scaling=scaling)


# Graphs one compiled block may need per input shape: plain, checkpointed, checkpointed keeping attention.
_BLOCK_VARIANTS = 3


def compile_blocks(transformer: nn.Module, *, dynamic: bool = False, shapes: int = 1, backend: str = "inductor") -> None:
    """Compile each block in place (names unchanged); all blocks share one graph per input shape and plan.

    Every bucket shape × block variant is one more graph of the same code; past dynamo's recompile limit
    (8) it would silently run the rest eager, so the limit is raised to what the buckets need (aspect
    buckets add shapes of their own, hence the margin).
    """
    need = 4 * _BLOCK_VARIANTS * max(1, shapes)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, need)
    warm_fp8_check(transformer)  # no first-call cache write inside a traced checkpoint
    for block in transformer.blocks:
        block.compile(dynamic=dynamic, backend=backend)


def bucket_key(planned: dict[int, object] | list[int], tokens: int) -> int:
    """The planned bucket a batch of ``tokens`` falls under: the smallest planned token count that holds
    it (aspect buckets have fewer tokens than their square), else the largest."""
    keys = sorted(planned)
    return next((k for k in keys if k >= tokens), keys[-1])


_aten = torch.ops.aten
_SDPA_OPS = {getattr(_aten, n).default for n in (
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu",
) if hasattr(_aten, n)}


_FLASH_OP = torch.ops.wanlora.flash_attention.default  # FlashAttention-4 (engine.model.attention)


def _save_self_attention(_ctx, op, *args, **_kwargs) -> CheckpointPolicy:
    """Keep self-attention outputs (query length == key length); recompute everything else.

    SDPA takes (batch, heads, tokens, dim), the FA4 op (batch, tokens, heads, dim)."""
    if op in _SDPA_OPS and args[0].shape[-2] == args[1].shape[-2]:
        return CheckpointPolicy.MUST_SAVE
    if op is _FLASH_OP and args[0].shape[1] == args[1].shape[1]:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _recompute_everything(_ctx, _op, *_args, **_kwargs) -> CheckpointPolicy:
    """Keep nothing but the block's inputs (compiled blocks past a plan's attention budget, the OOM fallback)."""
    return CheckpointPolicy.PREFER_RECOMPUTE


def _sac_contexts():
    return create_selective_checkpoint_contexts(_save_self_attention)


def _recompute_contexts():
    return create_selective_checkpoint_contexts(_recompute_everything)


_CKPT_CLASSES: dict[tuple[type, bool], type] = {}


def _ckpt_class(base: type, keep_attention: bool) -> type:
    """A subclass of the block class whose forward checkpoints itself (keeping attention outputs or not).

    Swapping ``__class__`` (instead of wrapping the module) keeps parameter names, and one class-level
    forward lets every block of a kind share a single compiled graph.
    """
    key = (base, keep_attention)
    if key not in _CKPT_CLASSES:
        # Compiled, always an explicit policy: under torch.compile (torch 2.11, CUDA) a checkpoint *without*
        # one kept 7.96 GiB per block at 86 016 tokens where eager keeps 0.82 (its input):
        # bench/block_memory.py.  Eager, a plain checkpoint already keeps only the input, without the policy's
        # per-op dispatch.
        class CheckpointedBlock(base):  # type: ignore[misc, valid-type]
            def forward(self, *args, **kwargs):  # noqa: ANN202
                if keep_attention:
                    ctx = _sac_contexts
                elif torch.compiler.is_compiling():
                    ctx = _recompute_contexts
                else:
                    return checkpoint(super().forward, *args, use_reentrant=False, **kwargs)
                return checkpoint(super().forward, *args, use_reentrant=False, context_fn=ctx, **kwargs)

        CheckpointedBlock.__name__ = f"{'SavedAttention' if keep_attention else ''}Checkpointed{base.__name__}"
        _CKPT_CLASSES[key] = CheckpointedBlock
    return _CKPT_CLASSES[key]


def _base_class(block: nn.Module) -> type:
    cls = type(block)
    return cls.__mro__[1] if cls in _CKPT_CLASSES.values() else cls


def set_checkpointing(transformer: nn.Module, n_checkpointed: int, *, save_attention: bool = False,
                      keep_attention: int | None = None) -> None:
    """Checkpoint the first ``n_checkpointed`` blocks only; the rest keep their activations.

    Without ``save_attention`` this uses diffusers' own hook (``_gradient_checkpointing_func`` receives the
    block), so compiled blocks are checkpointed around their compiled call, as with
    ``enable_gradient_checkpointing``.  With it, each checkpointed block checkpoints itself (traced by
    ``torch.compile`` inside the block); the first ``keep_attention`` of them (default: all) keep their
    self-attention output through a selective policy.
    """
    blocks = list(transformer.blocks)
    n = max(0, min(n_checkpointed, len(blocks)))
    keep = n if keep_attention is None else max(0, min(keep_attention, n))
    for i, b in enumerate(blocks):
        base = _base_class(b)
        b.__class__ = _ckpt_class(base, i < keep) if (save_attention and i < n) else base
    if save_attention:
        transformer.gradient_checkpointing = False
        return
    ckpt_ids = {id(b) for b in blocks[:n]}

    def policy(block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if id(block) in ckpt_ids:
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    transformer.gradient_checkpointing = n > 0
    transformer._gradient_checkpointing_func = policy


def attention_bytes(tokens: int, batch: int, dim: int = 5120) -> float:
    """What keeping one block's self-attention output costs (bf16 output + fp32 log-sum-exp per head)."""
    return tokens * batch * (dim * 2 + 40 * 4)


def blocks_to_checkpoint(
    n_blocks: int, tokens: int, batch: int, free_bytes: float, *, reserve_bytes: float = 10 * GIB,
    save_attention: bool = False,
) -> int:
    """How many blocks must be checkpointed so everything kept fits in ``free_bytes``.

    ``free_bytes`` is what is left after weights, optimizer state and the checkpointed activations;
    ``reserve_bytes`` covers attention workspace, compile workspace, the allocator's fragmentation and the
    VAE (10 GiB: 4 GiB was too little on an H100 at 41x512^2).  With ``save_attention`` every checkpointed
    block also keeps its attention output, which pays far more per byte than un-checkpointing a block.
    """
    per_block = BLOCK_ACT_BYTES_PER_TOKEN * tokens * batch
    att = attention_bytes(tokens, batch) if save_attention else 0.0
    room = max(0.0, free_bytes - reserve_bytes)
    if per_block <= 0:
        return 0
    # keep k blocks whole, checkpoint n-k keeping their attention: k*per_block + (n-k)*att <= room
    keep = int((room - n_blocks * att) // (per_block - att)) if room >= n_blocks * att else 0
    return max(0, n_blocks - min(n_blocks, max(0, keep)))


class CheckpointPlan(NamedTuple):
    """The first ``checkpointed`` blocks are checkpointed; the first ``keep_attention`` of those keep their
    self-attention output."""

    checkpointed: int
    keep_attention: int


# Peak *reserved* memory must stay under 92 % of the device (or of its cap); the plan aims at 90 %, as the
# first H200 trial planned for 92 % and reserved 92.07 % at 41x480x848 (bench/results/2026-12-01-h200-trial).
RESERVED_LIMIT = 0.92
RESERVED_TARGET = 0.90
_LIMIT_ENV = "WANLORA_VRAM_LIMIT_GIB"


def set_vram_limit(device: torch.device, gib: float) -> None:
    """Behave as a card of ``gib`` GiB (``torch.cuda.set_per_process_memory_fraction``); the planner reads it
    back from ``WANLORA_VRAM_LIMIT_GIB`` (``wanlora trial --vram-gib``; sharing a GPU with another job)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * GIB / total), index)
    os.environ[_LIMIT_ENV] = str(gib)


def memory_budget(device: torch.device) -> tuple[float, float]:
    """(bytes this process may still take, bytes it may hold at most): the device, or the cap set on it."""
    free, total = torch.cuda.mem_get_info(device)
    limit = float(os.environ.get(_LIMIT_ENV) or 0) * GIB or float(total)
    reserved, allocated = torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device)
    # Memory the caching allocator holds but no tensor uses (e.g. bf16 weights freed by fp8 conversion).
    free = min(free + reserved - allocated, limit - allocated)
    return max(0.0, free), min(limit, float(total))


def plan_checkpointing(transformer: nn.Module, tokens: int, batch: int, device: torch.device,
                       save_attention: bool = False) -> CheckpointPlan:
    """Checkpoint as few blocks as the GPU's free memory allows (all of them on CPU or when unsure).

    The reserve kept free is the larger of 10 GiB and ``1 − RESERVED_TARGET`` of the device, so peak
    reserved memory stays under 92 % whatever the card (expandable segments keep fragmentation low).
    """
    n_blocks = len(transformer.blocks)
    if device.type != "cuda":
        return CheckpointPlan(n_blocks, 0)
    free, limit = memory_budget(device)
    reserve = max(10 * GIB, (1 - RESERVED_TARGET) * limit)
    free -= GC_FLOOR_BYTES_PER_1K_TOKENS * tokens / 1000 * batch
    n = blocks_to_checkpoint(n_blocks, tokens, batch, free, save_attention=save_attention, reserve_bytes=reserve)
    if not save_attention:
        return CheckpointPlan(n, 0)
    # Too tight to keep every checkpointed block's attention (e.g. two experts at 1024^2): keep what fits.
    room = max(0.0, free - reserve - (n_blocks - n) * BLOCK_ACT_BYTES_PER_TOKEN * tokens * batch)
    return CheckpointPlan(n, min(n, int(room // attention_bytes(tokens, batch))))


def flops_per_step(tokens: int, text_tokens: int = 512, rank: int = 16, recompute_fraction: float = 1.0) -> float:
    """Matmul + attention FLOPs of one Wan A14B expert training step (shared/notes/baseline-h100-step.md)."""
    d, ffn, L, T, N, r = 5120, 13824, 40, text_tokens, tokens, rank
    mm = 2 * L * ((6 * d * d + 2 * d * ffn) * N + 2 * d * d * T) + 2 * (N * (36 * 4 * d + d * 64) + T * (4096 * d + d * d))
    attn = L * (4 * N * N * d + 4 * N * T * d)
    lora = 2 * r * L * (N * (12 * d + 2 * (d + ffn)) + 4 * d * T)
    fwd = mm + attn + lora
    bwd = mm + 2.5 * attn + 2 * lora
    return fwd * (1 + recompute_fraction) + bwd


__all__ = [
    "apply_fp8",
    "compile_blocks",
    "set_checkpointing",
    "blocks_to_checkpoint",
    "plan_checkpointing",
    "bucket_key",
    "CheckpointPlan",
    "video_tokens",
    "flops_per_step",
]
