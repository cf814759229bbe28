"""The FlashAttention-4 path (engine.model.attention), on the CPU: the Wan processors route through the
``wanlora::flash_attention`` op, its gradients equal SDPA's, selective checkpointing keeps its output, and
``torch.compile`` traces through it.  FA4 itself needs a Hopper GPU; here the op runs a plain PyTorch
kernel pair written in this test (the standard attention forward with log-sum-exp and its backward), which
has the same contract."""

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from wanlora.engine.model import attention
from wanlora.engine.train.acceleration import compile_blocks, set_checkpointing

from tests.engine.model.test_offload_quant import inputs, tiny_lora_model


def ref_fwd(q, k, v, scale):  # (batch, tokens, heads, dim)
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None])
    return torch.einsum("bhqk,bkhd->bqhd", p, v.float()).to(q.dtype), lse


def ref_bwd(dout, q, k, v, out, lse, scale):
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    p = torch.exp(s - lse[..., None])
    dv = torch.einsum("bhqk,bqhd->bkhd", p, dout.float())
    dp = torch.einsum("bqhd,bkhd->bhqk", dout.float(), v.float())
    delta = (dout.float() * out.float()).sum(-1).transpose(1, 2)  # (batch, heads, tokens)
    ds = p * (dp - delta[..., None])
    dq = torch.einsum("bhqk,bkhd->bqhd", ds, k.float()) * scale
    dk = torch.einsum("bhqk,bqhd->bkhd", ds, q.float()) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


REF = {"fwd": ref_fwd, "bwd": ref_bwd}


class CountFlash(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.self_attn = self.cross_attn = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.wanlora.flash_attention.default:
            if args[0].shape[1] == args[1].shape[1]:
                self.self_attn += 1
            else:
                self.cross_attn += 1
        return func(*args, **(kwargs or {}))


def _grads(m, mode=None):
    x, t, txt = inputs()
    if mode is None:
        out = m(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0]
        out.square().mean().backward()
    else:
        with mode:
            out = m(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0]
            out.square().mean().backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}


def test_wan_attention_through_the_op_has_sdpa_gradients_and_checkpointing_keeps_it():
    sdpa = tiny_lora_model()
    flash = copy.deepcopy(sdpa)
    assert attention.route_to_flash(flash, REF) == 2 * len(flash.blocks)  # self + cross attention per block
    g_sdpa = _grads(sdpa)
    c = CountFlash()
    g_flash = _grads(flash, c)
    n = len(flash.blocks)
    assert (c.self_attn, c.cross_attn) == (n, n)  # every attention call went through the op
    assert g_sdpa.keys() == g_flash.keys()
    for k in g_sdpa:
        torch.testing.assert_close(g_flash[k], g_sdpa[k], rtol=1e-4, atol=1e-6)

    kept = copy.deepcopy(flash)  # checkpointed blocks keeping attention: no self-attention forward in backward
    set_checkpointing(kept, n, save_attention=True)
    c = CountFlash()
    g_kept = _grads(kept, c)
    assert c.self_attn == n and c.cross_attn == 2 * n  # cross-attention is recomputed, self-attention kept
    recomputed = copy.deepcopy(flash)
    set_checkpointing(recomputed, n, save_attention=True, keep_attention=0)
    c = CountFlash()
    _grads(recomputed, c)
    assert c.self_attn == 2 * n
    for k in g_sdpa:
        torch.testing.assert_close(g_kept[k], g_sdpa[k], rtol=1e-4, atol=1e-6)


def test_compile_traces_through_the_op():
    m = tiny_lora_model()
    ref = copy.deepcopy(m)
    attention.route_to_flash(m, REF)
    set_checkpointing(m, len(m.blocks), save_attention=True)
    compile_blocks(m)
    g, g_ref = _grads(m), _grads(ref)
    for k in g_ref:
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("setting", ["auto", "flash4"])
def test_without_a_gpu_attention_falls_back_to_sdpa(setting):
    kernel, note = attention.choose(setting, torch.device("cpu"))
    assert kernel == "native"
    if setting == "flash4":  # asked for by name: the one-line note says why not
        assert "needs a CUDA GPU" in note and "SDPA" in note
    else:
        assert note is None
    assert attention.choose("cudnn", torch.device("cpu")) == ("cudnn", None)


@pytest.mark.parametrize("head_dim,takes", [(128, True), (64, True), (256, True), (12, False), (4, False),
                                            (320, False)])
def test_fa4_is_not_chosen_for_a_head_size_its_kernels_refuse(monkeypatch, head_dim, takes):
    """The tiny model's 12-wide heads crashed FA4 at the first step on an H100 (2026-12-08,
    tests/engine/train/test_gpu_smoke.py: 'head_dim 12 is not supported on SM90'): where FA4 runs, a head size
    outside its kernels' range (a multiple of 8 from 8 to 256) must fall back to SDPA with the reason, not fail
    the run."""
    monkeypatch.setattr(attention, "fa4_unavailable", lambda device: None)  # as on a Hopper with FA4 installed
    kernel, note = attention.choose("auto", torch.device("cuda"), head_dim=head_dim)
    if takes:
        assert (kernel, note) == ("flash4", None)
    else:
        assert kernel == "native" and f"head dimension {head_dim}" in note and "SDPA" in note
