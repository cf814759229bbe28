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

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts
from wanlora.engine.model import attention as _attention  # noqa: F401 — registers the FA4 op the policy keeps
from wanlora.engine.model.fp8_linear import Scaling, convert_to_fp8, warm_fp8_check
from wanlora.engine.train.memory_plan import (  # noqa: F401 - the planner's arithmetic, shared with the estimate
    BLOCK_ACT_BYTES_PER_TOKEN,
    GC_FLOOR_BYTES_PER_1K_TOKENS,
    GIB,
    RESERVED_LIMIT,
    RESERVED_TARGET,
    CheckpointPlan,
    attention_bytes,
    blocks_to_checkpoint,
    flops_per_step,
    plan_for_free,
    video_tokens,
)


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
                       save_attention: bool = False, pending_bytes: float = 0.0) -> CheckpointPlan:
    """Checkpoint as few blocks as the GPU's free memory allows (all of them on CPU or when unsure).

    The reserve kept free is the larger of 13 GiB and ``1 − RESERVED_TARGET`` of the device, so peak
    reserved memory stays under 92 % whatever the card.  ``pending_bytes``: memory the first step will
    allocate that is not there yet (the LoRA gradients and AdamW moments).  The arithmetic is
    :func:`engine.train.memory_plan.plan_for_free`, which ``wanlora estimate`` runs too.
    """
    n_blocks = len(transformer.blocks)
    if device.type != "cuda":
        return CheckpointPlan(n_blocks, 0)
    free, limit = memory_budget(device)
    return plan_for_free(n_blocks, tokens, batch, free - pending_bytes, limit, save_attention=save_attention)


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
