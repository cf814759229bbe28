"""Checkpointed blocks that keep their self-attention output: same gradients, no attention recompute."""

import copy

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from wanlora.engine.train.acceleration import (
    _SDPA_OPS,
    blocks_to_checkpoint,
    compile_blocks,
    set_checkpointing,
)

from tests.engine.model.test_offload_quant import inputs, tiny_lora_model


class CountSdpa(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.self_attn = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _SDPA_OPS and args[0].shape[-2] == args[1].shape[-2]:
            self.self_attn += 1
        return func(*args, **(kwargs or {}))


def grads_and_count(m, count: bool = True):
    x, t, txt = inputs()
    out = m(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0]
    c = CountSdpa()
    if count:
        with c:
            out.square().mean().backward()
    else:  # compiled graphs run higher-order ops a counting mode cannot see through
        out.square().mean().backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}, c.self_attn


def test_saved_attention_checkpointing_matches_and_skips_attention_recompute():
    plain = tiny_lora_model()
    saved = copy.deepcopy(plain)
    names = [n for n, _ in plain.named_parameters()]
    set_checkpointing(plain, 3)
    set_checkpointing(saved, 3, save_attention=True)
    assert [n for n, _ in saved.named_parameters()] == names  # LoRA keys unchanged
    g_plain, n_plain = grads_and_count(plain)
    g_saved, n_saved = grads_and_count(saved)
    assert n_plain == 3  # each checkpointed block recomputes its self-attention in backward...
    assert n_saved == 0  # ...unless its output was kept
    for k in g_plain:
        torch.testing.assert_close(g_saved[k], g_plain[k], rtol=1e-5, atol=1e-6)
    set_checkpointing(saved, 3)  # switching back restores the plain block class
    assert type(saved.blocks[0]) is type(plain.blocks[0])


def test_only_the_first_blocks_keep_attention_when_memory_is_tight():
    plain = tiny_lora_model()
    part = copy.deepcopy(plain)
    set_checkpointing(plain, 3)
    set_checkpointing(part, 3, save_attention=True, keep_attention=1)
    g_plain, _ = grads_and_count(plain)
    g_part, n_part = grads_and_count(part)
    assert n_part == 2  # two checkpointed blocks recompute attention, the first one kept it
    for k in g_plain:
        torch.testing.assert_close(g_part[k], g_plain[k], rtol=1e-5, atol=1e-6)


def test_saved_attention_under_compile_trains():
    m = tiny_lora_model()
    ref = copy.deepcopy(m)
    set_checkpointing(m, 3, save_attention=True)  # all blocks alike: one compiled graph
    compile_blocks(m)
    g, _ = grads_and_count(m, count=False)
    g_ref, _ = grads_and_count(ref, count=False)
    for k in g_ref:
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-4, atol=1e-5)


def test_planner_prefers_saving_attention_to_unckeckpointing():
    gib = 2**30
    tokens = 32760
    plain = blocks_to_checkpoint(40, tokens, 1, free_bytes=45 * gib)
    with_att = blocks_to_checkpoint(40, tokens, 1, free_bytes=45 * gib, save_attention=True)
    assert 0 < plain < 40 and plain <= with_att <= 40
    # too little room even for the attention outputs: checkpoint everything
    assert blocks_to_checkpoint(40, tokens, 1, free_bytes=12 * gib, save_attention=True) == 40
