"""Speed levers for the expert transformers, each measured in bench/step.py (see BENCHMARKS.md).

- fp8 compute for the frozen base (:mod:`engine.model.fp8_linear`): half the weight memory *and* fp8
  tensor-core matmuls forward and backward.
- per-block ``torch.compile``: fuses the elementwise/LayerNorm glue between matmuls (~1/3 of eager time).
- selective activation checkpointing: checkpoint only as many blocks as memory requires; every block left
  un-checkpointed saves its forward recompute.

All three keep parameter names unchanged, so LoRA state dicts, checkpoints and resume are unaffected.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine.model.fp8_linear import convert_to_fp8

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


def apply_fp8(transformer: nn.Module) -> int:
    """fp8 weights + fp8 matmuls for every frozen Linear inside the transformer blocks."""
    return convert_to_fp8(transformer, lambda name, _m: name.startswith("blocks."))


def compile_blocks(transformer: nn.Module, *, dynamic: bool = False) -> None:
    """Compile each block in place (names unchanged); all blocks share one graph per input shape."""
    for block in transformer.blocks:
        block.compile(dynamic=dynamic)


def set_checkpointing(transformer: nn.Module, n_checkpointed: int) -> None:
    """Checkpoint the first ``n_checkpointed`` blocks only; the rest keep their activations.

    Uses diffusers' own hook (``_gradient_checkpointing_func`` receives the block), so compiled blocks are
    checkpointed around their compiled call, exactly as with ``enable_gradient_checkpointing``.
    """
    blocks = list(transformer.blocks)
    n = max(0, min(n_checkpointed, len(blocks)))
    ckpt_ids = {id(b) for b in blocks[:n]}

    def policy(block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if id(block) in ckpt_ids:
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    transformer.gradient_checkpointing = n > 0
    transformer._gradient_checkpointing_func = policy


def blocks_to_checkpoint(
    n_blocks: int, tokens: int, batch: int, free_bytes: float, *, reserve_bytes: float = 4 * GIB
) -> int:
    """How many blocks must be checkpointed so the un-checkpointed ones fit in ``free_bytes``.

    ``free_bytes`` is what is left after weights, optimizer state and the checkpointed activations;
    ``reserve_bytes`` covers attention workspace, the allocator's fragmentation and the text/VAE side.
    """
    per_block = BLOCK_ACT_BYTES_PER_TOKEN * tokens * batch
    room = max(0.0, free_bytes - reserve_bytes)
    keep = int(room // per_block) if per_block > 0 else n_blocks
    return max(0, n_blocks - min(n_blocks, keep))


def plan_checkpointing(transformer: nn.Module, tokens: int, batch: int, device: torch.device) -> int:
    """Checkpoint as few blocks as the GPU's free memory allows (all of them on CPU or when unsure)."""
    n_blocks = len(transformer.blocks)
    if device.type != "cuda":
        return n_blocks
    free, _total = torch.cuda.mem_get_info(device)
    # Memory the caching allocator holds but no tensor uses (e.g. bf16 weights freed by fp8 conversion).
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    gc_floor = GC_FLOOR_BYTES_PER_1K_TOKENS * tokens / 1000 * batch
    return blocks_to_checkpoint(n_blocks, tokens, batch, free - gc_floor)


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
    "video_tokens",
    "flops_per_step",
]
