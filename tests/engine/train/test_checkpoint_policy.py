"""Every compiled checkpointed block runs under an explicit selective policy, also when it keeps no attention.

Under ``torch.compile`` on the H200 (torch 2.11, CUDA), a block checkpointed *without* a policy kept
7.96 GiB at 86 016 tokens where the same block eager keeps 0.82 GiB (its input): the OOM fallback and the
blocks of a plan past its attention budget were checkpointed in name only, and the 81x1024² bucket ran out of
memory with both experts (BENCHMARKS.md §0b, ``bench/block_memory.py``).  torch 2.13 routes a plain
checkpoint through the same machinery itself, so on the CPU the policy being consulted is what shows it.
(Eager blocks keep the plain checkpoint: it keeps only the input there, without per-op dispatch.)"""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import CheckpointPolicy
from wanlora.engine.train import acceleration as acc

from tests.engine.model.test_offload_quant import inputs, tiny_lora_model


@pytest.mark.parametrize("keep_attention", [0, 1], ids=["frugal", "mixed"])
def test_blocks_without_kept_attention_recompute_every_op(keep_attention: int, monkeypatch) -> None:
    seen: list[tuple[str, CheckpointPolicy]] = []
    real = acc._recompute_everything

    def spy(ctx, op, *args, **kwargs):  # noqa: ANN001, ANN202
        policy = real(ctx, op, *args, **kwargs)
        seen.append((str(op), policy))
        return policy

    monkeypatch.setattr(acc, "_recompute_everything", spy)
    torch._dynamo.reset()
    m = tiny_lora_model()
    acc.set_checkpointing(m, 3, save_attention=True, keep_attention=keep_attention)
    acc.compile_blocks(m, backend="aot_eager")
    x, t, txt = inputs()
    m(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0].square().mean().backward()
    torch._dynamo.reset()
    ops = {op for op, _ in seen}
    # the frugal blocks' matmuls and self-attention go through the policy, and none is kept
    assert any("mm" in op for op in ops), ops
    assert any("scaled_dot_product" in op for op in ops), ops
    assert {p for _, p in seen} == {CheckpointPolicy.PREFER_RECOMPUTE}
    assert any(p.grad is not None for p in m.parameters() if p.requires_grad)

