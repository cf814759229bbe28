"""Layer offloading and quantised placement on a tiny real Wan transformer (CPU: same code path)."""

import copy

import pytest
import torch
from diffusers import WanTransformer3DModel
from peft import LoraConfig
from wanlora.engine.model.fp8_linear import Fp8Linear
from wanlora.engine.model.offload import BlockStreamer
from wanlora.engine.model.quant import (
    QuantizationUnavailable,
    check_available,
    model_bytes,
    quantize_and_place,
)
from wanlora.engine.train.acceleration import set_checkpointing

CFG = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=36, out_channels=16,
           text_dim=32, freq_dim=256, ffn_dim=64, num_layers=3, cross_attn_norm=True,
           qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]


def tiny_lora_model(seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    m = WanTransformer3DModel(**CFG).requires_grad_(False)
    m.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    return m


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 36, 3, 8, 8, generator=g)
    txt = torch.randn(1, 5, 32, generator=g)
    t = torch.tensor([500.0])
    return x, t, txt


def run_steps(m, n=3):
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    x, t, txt = inputs()
    target = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    losses = []
    for _ in range(n):
        out = m(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(out, target)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_offloaded_training_matches_resident_and_keeps_lora_updates():
    resident = tiny_lora_model()
    offloaded = copy.deepcopy(resident)
    set_checkpointing(resident, 3)
    set_checkpointing(offloaded, 3)
    streamer = BlockStreamer(offloaded, torch.device("cpu"))
    assert streamer.bytes_per_pass > 0
    ref = run_steps(resident)
    got = run_steps(offloaded)
    assert got == pytest.approx(ref, rel=1e-5)
    # between steps the streamed base weights are not held by the modules (only the current/next block)
    present = [i for i, entries in enumerate(streamer.cpu)
               if all(getattr(mod, attr).numel() > 0 for mod, attr, _h in entries)]
    assert 1 <= len(present) <= 2
    # LoRA updates live on the module, not in the streamed copies: both models changed identically
    for (n1, p1), (n2, p2) in zip(resident.named_parameters(), offloaded.named_parameters(), strict=True):
        if p1.requires_grad:
            assert n1 == n2
            torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6)


def test_fp8_placement_quantises_block_linears_only_and_halves_their_bytes():
    m = tiny_lora_model()
    before = model_bytes(m.blocks)
    n = quantize_and_place(m, "fp8", torch.device("cpu"))
    # 3 blocks x 6 targets (attn1 q,k,v,o share in_features 32; ffn 32->64->32): all divisible by 16
    assert n == 3 * 10
    assert all(isinstance(mod, Fp8Linear) for blk in m.blocks for name, mod in blk.named_modules()
               if name.endswith("base_layer"))
    assert model_bytes(m.blocks) < before
    losses = run_steps(m, 5)
    assert all(map(lambda v: v == v, losses)) and losses[-1] < losses[0]


def test_nf4_refuses_cpu_with_the_fix():
    with pytest.raises(QuantizationUnavailable, match="fp8"):
        check_available("nf4", torch.device("cpu"))


def test_fp8_placement_materialises_a_meta_model_including_its_own_parameters():
    """``wanlora trial`` builds the experts on ``meta``; fp8 placement gives every tensor storage on the device,
    the transformer's own ``scale_shift_table`` too (it crashed every fp8 trial once)."""
    from diffusers import WanTransformer3DModel
    from wanlora.engine.model.quant import quantize_and_place

    with torch.device("meta"):
        m = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=36,
                                  out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
                                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    m.requires_grad_(False)  # the frozen base (LoRA would stay bf16)
    table = m.scale_shift_table
    assert quantize_and_place(m, "fp8", torch.device("cpu")) > 0
    assert not any(p.is_meta for p in m.parameters()) and not any(b.is_meta for b in m.buffers())
    assert m.scale_shift_table is table and torch.isfinite(table).all()  # the same Parameter, given storage


def test_offloading_quantises_each_block_after_the_previous_one_went_to_host_memory(monkeypatch):
    """The 12 GB tier: the text encoder (~6.5 GiB in fp8) sits on the card while the experts are placed, so an
    expert must never be whole on the GPU (7.5 GiB in nf4).  Each block is quantised only once every earlier
    block's weights have left for host memory, and training matches quantising the whole expert first."""
    from wanlora.engine.model import offload, quant

    whole = tiny_lora_model()
    quantize_and_place(whole, "fp8", torch.device("cpu"))
    set_checkpointing(whole, 3)
    BlockStreamer(whole, torch.device("cpu"))

    m = tiny_lora_model()
    set_checkpointing(m, 3)
    on_device_at_quantise: list[int] = []
    real = quant.quantize_block

    def spy(block, mode, device):
        # blocks whose streamed weights are still on the module (not yet swapped for the empty placeholder)
        on_device_at_quantise.append(sum(all(getattr(mod, a).numel() > 0 for mod, a in offload._heavy_tensors(b))
                                         for b in m.blocks if b is not block))
        return real(block, mode, device)

    monkeypatch.setattr(offload, "quantize_block", spy)
    streamer = BlockStreamer(m, torch.device("cpu"), quantize="fp8")
    assert streamer.quantized == 3 * 10
    # when block i is quantised only the not-yet-placed blocks i+1.. still hold weights (the bf16 originals)
    assert on_device_at_quantise == [2, 1, 0]
    assert all(isinstance(mod, Fp8Linear) for blk in m.blocks for name, mod in blk.named_modules()
               if name.endswith("base_layer"))
    assert run_steps(m) == pytest.approx(run_steps(whole), rel=1e-5)
