"""The checkpoint planner's arithmetic, torch-free: what one bucket keeps, what it recomputes, what it costs.

The trainer (:func:`engine.train.acceleration.plan_checkpointing`) feeds it the free memory it measures on
the device; ``wanlora estimate`` and the wizard feed it the memory they expect on the card, so the estimate
plans exactly as the trainer will (the same blocks checkpointed, the same attention outputs kept) and its
step time counts the same recompute.  Pure functions of numbers.
It sits in ``engine/train`` beside the planner it serves; ``engine/train/__init__.py`` imports nothing, so
``engine.estimate`` (and ``wanlora validate`` through it) reads it without importing torch.
"""

from __future__ import annotations

from typing import NamedTuple

GIB = 1024**3
N_BLOCKS = 40  # Wan 2.2 A14B expert
D, FFN, TEXT_TOKENS = 5120, 13824, 512
# Activation memory of one Wan 2.2 A14B block left un-checkpointed, per video token at batch 1 (bf16,
# compiled).  Measured on an H100 (bench/results/2026-11-21-h100-levers.jsonl: 1.87 GiB per block at
# 11 264 tokens, 2.4 GiB at 17 160) and rounded up.
BLOCK_ACT_BYTES_PER_TOKEN = 0.17 * 1024**2
# What a fully checkpointed expert keeps besides its weights, per 1000 tokens (block inputs, optimizer,
# loss): 8.3 GiB at 11 264 tokens and 12.5 GiB at 17 160 in the same run.
GC_FLOOR_BYTES_PER_1K_TOKENS = 0.74 * GIB
# What it really holds, fully checkpointed, eager bf16 on an H100 (35.1 / 44.9 / 58.5 GiB peaks at 11k / 25k /
# 45k tokens with one 26.8 GiB expert): 0.69-0.70 GiB per 1000 tokens.  The planner budgets 0.74 (a margin);
# the estimate of what a step holds uses this.
HELD_FLOOR_BYTES_PER_1K_TOKENS = 0.70 * GIB
# Peak *reserved* memory must stay under 92 % of the device (or of its cap); the plan aims at 90 %, as the
# first H200 trial planned for 92 % and reserved 92.07 % at 41x480x848 (bench/results/2026-12-01-h200-trial).
RESERVED_LIMIT = 0.92
RESERVED_TARGET = 0.90
# Attention/compile workspace, fragmentation, the VAE.  4 GiB was too little on an H100 at 41x512²; 10 GiB left
# the 80 GB card at 96.6 % reserved at 41x1024² (the allocator reserved 5.4 GiB over the peak allocated there,
# bench/results/2026-12-07-tier-matrix), so the floor is 13 GiB (the 141 GB card's 10 % is 14 GiB anyway).
MIN_RESERVE_BYTES = 13 * GIB


class CheckpointPlan(NamedTuple):
    """The first ``checkpointed`` blocks are checkpointed; the first ``keep_attention`` of those keep their
    self-attention output."""

    checkpointed: int
    keep_attention: int


def video_tokens(num_frames: int, height: int, width: int) -> int:
    """Tokens the transformer sees: latent frames × (H/16) × (W/16) (VAE /8, patch 2)."""
    return ((num_frames - 1) // 4 + 1) * (height // 16) * (width // 16)


def attention_bytes(tokens: int, batch: int, dim: int = D) -> float:
    """What keeping one block's self-attention output costs (bf16 output + fp32 log-sum-exp per head)."""
    return tokens * batch * (dim * 2 + 40 * 4)


def block_bytes(tokens: int, batch: int) -> float:
    """Activations one un-checkpointed block keeps for its backward."""
    return BLOCK_ACT_BYTES_PER_TOKEN * tokens * batch


def floor_bytes(tokens: int, batch: int) -> float:
    """What a fully checkpointed expert still holds during a step (block inputs, one block's working set)."""
    return GC_FLOOR_BYTES_PER_1K_TOKENS * tokens / 1000 * batch


def reserve_bytes(limit_bytes: float) -> float:
    """Room the plan leaves free: the larger of 13 GiB and ``1 − RESERVED_TARGET`` of the card."""
    return max(MIN_RESERVE_BYTES, (1 - RESERVED_TARGET) * limit_bytes)


def blocks_to_checkpoint(
    n_blocks: int, tokens: int, batch: int, free_bytes: float, *, reserve_bytes: float = MIN_RESERVE_BYTES,
    save_attention: bool = False,
) -> int:
    """How many blocks must be checkpointed so everything kept fits in ``free_bytes``.

    ``free_bytes`` is what is left after weights, optimizer state and the checkpointed activations;
    ``reserve_bytes`` covers attention workspace, compile workspace, the allocator's fragmentation and the
    VAE.  With ``save_attention`` every checkpointed block also keeps its attention output, which pays far
    more per byte than un-checkpointing a block.
    """
    per_block = block_bytes(tokens, batch)
    att = attention_bytes(tokens, batch) if save_attention else 0.0
    room = max(0.0, free_bytes - reserve_bytes)
    if per_block <= 0:
        return 0
    # keep k blocks whole, checkpoint n-k keeping their attention: k*per_block + (n-k)*att <= room
    keep = int((room - n_blocks * att) // (per_block - att)) if room >= n_blocks * att else 0
    return max(0, n_blocks - min(n_blocks, max(0, keep)))


def plan_for_free(n_blocks: int, tokens: int, batch: int, free_bytes: float, limit_bytes: float,
                  save_attention: bool = True) -> CheckpointPlan:
    """The plan for one bucket given the bytes still free with the weights loaded and the card's size."""
    reserve = reserve_bytes(limit_bytes)
    free = free_bytes - floor_bytes(tokens, batch)
    n = blocks_to_checkpoint(n_blocks, tokens, batch, free, save_attention=save_attention, reserve_bytes=reserve)
    if not save_attention:
        return CheckpointPlan(n, 0)
    # Too tight to keep every checkpointed block's attention (e.g. two experts at 1024^2): keep what fits.
    room = max(0.0, free - reserve - (n_blocks - n) * block_bytes(tokens, batch))
    return CheckpointPlan(n, min(n, int(room // attention_bytes(tokens, batch))))


def activation_bytes(plan: CheckpointPlan, n_blocks: int, tokens: int, batch: int,
                     held_floor_per_1k: float | None = None) -> float:
    """What a step under ``plan`` holds at its peak besides weights and optimizer state (the measured floor,
    ``HELD_FLOOR_BYTES_PER_1K_TOKENS`` unless a base measured its own, not the planner's margin)."""
    floor = HELD_FLOOR_BYTES_PER_1K_TOKENS if held_floor_per_1k is None else held_floor_per_1k
    return (floor * tokens / 1000 * batch + (n_blocks - plan.checkpointed) * block_bytes(tokens, batch)
            + plan.keep_attention * attention_bytes(tokens, batch))


def _forward_parts(tokens: int, text_tokens: int, rank: int) -> tuple[float, float, float]:
    """(matmul, attention, LoRA) FLOPs of one expert's forward at batch 1 (shared/notes/baseline-h100-step.md)."""
    d, ffn, L, T, N, r = D, FFN, N_BLOCKS, text_tokens, tokens, rank
    mm = 2 * L * ((6 * d * d + 2 * d * ffn) * N + 2 * d * d * T) + 2 * (N * (36 * 4 * d + d * 64) + T * (4096 * d + d * d))
    attn = L * (4 * N * N * d + 4 * N * T * d)
    lora = 2 * r * L * (N * (12 * d + 2 * (d + ffn)) + 4 * d * T)
    return mm, attn, lora


def flops_per_step(tokens: int, text_tokens: int = TEXT_TOKENS, rank: int = 16, recompute_fraction: float = 1.0) -> float:
    """Matmul + attention FLOPs of one Wan A14B expert training step; ``recompute_fraction`` of a forward
    is run again in the backward (1 = every block checkpointed, nothing kept)."""
    mm, attn, lora = _forward_parts(tokens, text_tokens, rank)
    fwd = mm + attn + lora
    bwd = mm + 2.5 * attn + 2 * lora
    return fwd * (1 + recompute_fraction) + bwd


def recompute_fraction(plan: CheckpointPlan, n_blocks: int, tokens: int, text_tokens: int = TEXT_TOKENS,
                       rank: int = 16) -> float:
    """The share of one forward that ``plan`` recomputes: its checkpointed blocks, less the self-attention
    of those that keep it (self-attention is ``N²`` of the attention FLOPs; cross-attention is recomputed)."""
    if n_blocks <= 0:
        return 0.0
    mm, attn, lora = _forward_parts(tokens, text_tokens, rank)
    self_attn = n_blocks * 4 * tokens * tokens * D
    per_block, self_per_block = (mm + attn + lora) / n_blocks, self_attn / n_blocks
    redo = plan.checkpointed * per_block - plan.keep_attention * self_per_block
    return max(0.0, redo / (mm + attn + lora))


def forward_flops(tokens: int, text_tokens: int = TEXT_TOKENS, rank: int = 16) -> float:
    """One forward pass (a DOP preservation pass, a preview's denoising step)."""
    return sum(_forward_parts(tokens, text_tokens, rank))
