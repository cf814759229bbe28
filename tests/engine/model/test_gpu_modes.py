"""Each memory/speed mode trains correctly on CUDA (run on the device machine:
``pytest -m gpu tests/engine/model``).

A small Wan transformer (real diffusers class, dims divisible by 16 so fp8 GEMMs apply) overfits a fixed
target under each mode; modes that should be exact (offloading, selective checkpointing) must match the
plain run, quantised ones must still learn.
"""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import WanTransformer3DModel
from peft import LoraConfig
from wanlora.engine.model.fp8_linear import Fp8Linear
from wanlora.engine.model.offload import BlockStreamer
from wanlora.engine.model.quant import quantize_and_place
from wanlora.engine.train.acceleration import compile_blocks, set_checkpointing

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CFG = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=36, out_channels=16,
           text_dim=64, freq_dim=256, ffn_dim=256, num_layers=4, cross_attn_norm=True,
           qk_norm="rms_norm_across_heads", rope_max_seq_len=64)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
DEV = torch.device("cuda")


def model(seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    m = WanTransformer3DModel(**CFG).to(DEV, torch.bfloat16).requires_grad_(False)
    m.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=TARGETS))
    return m


def overfit(m, steps: int = 30, lr: float = 1e-2) -> list[float]:
    g = torch.Generator(DEV).manual_seed(1)
    x = torch.randn(1, 36, 3, 16, 16, device=DEV, generator=g, dtype=torch.bfloat16)
    txt = torch.randn(1, 8, 64, device=DEV, generator=g, dtype=torch.bfloat16)
    target = torch.randn(1, 16, 3, 16, 16, device=DEV, generator=g)
    t = torch.tensor([700.0], device=DEV)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr)
    out = []
    for _ in range(steps):
        pred = m(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(loss.item())
    return out


def learned(losses: list[float]) -> bool:
    return all(v == v for v in losses) and losses[-1] < 0.85 * losses[0]


def test_bf16_baseline_learns():
    assert learned(overfit(model()))


def test_fp8_compute_learns_and_stores_one_byte_weights():
    m = model()
    n = quantize_and_place(m, "fp8", DEV)
    assert n == 4 * 10 and any(isinstance(x, Fp8Linear) for x in m.modules())
    got, ref = overfit(m), overfit(model())
    assert learned(got)
    assert got == pytest.approx(ref, rel=0.05)  # fp8 follows the bf16 trajectory


def test_rowwise_fp8_compute_learns_on_cuda_compiled():
    """Row-wise scales go through CUDA's row-wise ``_scaled_mm`` (bias included) inside compiled blocks."""
    from wanlora.engine.train.acceleration import apply_fp8

    m = model()
    assert apply_fp8(m, scaling="row") == 4 * 10
    assert {x.scaling for x in m.modules() if isinstance(x, Fp8Linear)} == {"row"}
    set_checkpointing(m, 2)
    compile_blocks(m)
    got, ref = overfit(m), overfit(model())
    assert learned(got)
    assert got == pytest.approx(ref, rel=0.05)


def test_nf4_learns():
    pytest.importorskip("bitsandbytes", reason="nf4 needs bitsandbytes (pip install 'wanlora[cuda]')")
    m = model()
    assert quantize_and_place(m, "nf4", DEV) == 40
    assert learned(overfit(m))


def test_selective_checkpointing_is_exact():
    a, b = model(), model()
    set_checkpointing(a, 4)
    set_checkpointing(b, 1)
    la, lb = overfit(a, 6), overfit(b, 6)
    assert la == pytest.approx(lb, rel=2e-2)


def test_layer_offloading_streams_on_cuda_and_matches_resident():
    a = model()
    b = copy.deepcopy(a)
    quantize_and_place(a, "fp8", DEV)
    quantize_and_place(b, "fp8", DEV)
    set_checkpointing(a, 4)
    set_checkpointing(b, 4)
    BlockStreamer(b, DEV)
    la, lb = overfit(a, 8), overfit(b, 8)
    assert lb == pytest.approx(la, rel=1e-3)


def test_compiled_fp8_blocks_learn():
    m = model()
    quantize_and_place(m, "fp8", DEV)
    set_checkpointing(m, 2)
    compile_blocks(m)
    assert learned(overfit(m))


def test_attention_auto_takes_flash_attention_4_or_says_why_not():
    """``auto`` runs FA4 where it is installed and runs, with SDPA's gradients; else a one-line note."""
    from wanlora.engine.model import attention

    kernel, note = attention.choose("auto", DEV)
    if kernel != "flash4":
        assert kernel == "native" and "FlashAttention-4" in note and "SDPA" in note
        return
    assert note is None
    cfg = {**CFG, "num_attention_heads": 2, "attention_head_dim": 128}  # FA4's head size, as Wan's
    torch.manual_seed(0)
    sdpa = WanTransformer3DModel(**cfg).to(DEV, torch.bfloat16).requires_grad_(False)
    sdpa.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=TARGETS))
    flash = copy.deepcopy(sdpa)
    attention.apply(flash, "flash4")
    grads = []
    for m in (sdpa, flash):
        for p in m.parameters():  # LoRA B starts at zero: give it values so A's gradients are not zero
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02, generator=torch.Generator(DEV).manual_seed(p.numel()))
        g = torch.Generator(DEV).manual_seed(1)
        x = torch.randn(1, 36, 3, 16, 16, device=DEV, generator=g, dtype=torch.bfloat16)
        txt = torch.randn(1, 8, 64, device=DEV, generator=g, dtype=torch.bfloat16)
        m(x, timestep=torch.tensor([700.0], device=DEV), encoder_hidden_states=txt,
          return_dict=False)[0].float().square().mean().backward()
        grads.append(torch.cat([p.grad.float().flatten() for p in m.parameters() if p.requires_grad]))
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], 0) > 0.999
