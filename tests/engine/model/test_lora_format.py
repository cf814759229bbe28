"""LoRA files: ComfyUI key names, alpha, dtype, metadata — and that the stock diffusers pipeline loads them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from wanlora.engine.model.lora import add_lora, lora_state_dict, target_regex
from wanlora.engine.model.lora_format import comfy_to_peft, lora_metadata, peft_to_comfy, read_lora, save_lora


def _expert(tiny_pipe, which: str = "transformer"):
    return copy.deepcopy(getattr(tiny_pipe, which))


def _randomise_lora(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _meta(**kw) -> dict[str, str]:
    base = dict(base_model="tiny", expert="high_noise", rank=4, alpha=4.0, trigger="sks", step=10,
                recipe="motion", modules="attn+ffn", boundary_ratio=0.9)
    base.update(kw)
    return lora_metadata(**base)


def test_keys_are_comfyui_wan_names_with_alpha(tiny_pipe) -> None:
    m = _expert(tiny_pipe)
    add_lora(m, rank=4, alpha=8, modules="attn+ffn")
    sd = lora_state_dict(m)
    assert len(sd) == 2 * 10 * 2  # 2 blocks × 10 Linears × (A, B)
    out = peft_to_comfy(sd, alpha=8)
    expected = {f"diffusion_model.blocks.{b}.{mod}.{ab}.weight"
                for b in (0, 1)
                for mod in [f"{a}.{x}" for a in ("self_attn", "cross_attn") for x in "qkvo"] + ["ffn.0", "ffn.2"]
                for ab in ("lora_A", "lora_B")}
    assert {k for k in out if not k.endswith(".alpha")} == expected
    alphas = {k: v for k, v in out.items() if k.endswith(".alpha")}
    assert len(alphas) == 20 and all(v.item() == 8.0 for v in alphas.values())
    back, back_alpha = comfy_to_peft(out)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    assert set(back_alpha.values()) == {8.0}


@pytest.mark.parametrize("modules,count", [("attn", 8), ("ffn", 2)])
def test_module_sets(tiny_pipe, modules: str, count: int) -> None:
    m = _expert(tiny_pipe)
    add_lora(m, rank=2, alpha=2, modules=modules)
    sd = lora_state_dict(m)
    assert len(sd) == 2 * count * 2
    assert all(("ffn" in k) == (modules == "ffn") for k in sd)


def test_unknown_modules_and_keys_are_errors() -> None:
    with pytest.raises(ValueError):
        target_regex("everything")
    with pytest.raises(KeyError):
        peft_to_comfy({"blocks.0.norm2.lora_A.weight": torch.zeros(1)}, 1.0)
    with pytest.raises(KeyError):
        comfy_to_peft({"lora_unet_blocks_0_self_attn_q.lora_down.weight": torch.zeros(1)})


def test_save_honours_dtype_metadata_and_is_atomic(tiny_pipe, tmp_path: Path) -> None:
    m = _expert(tiny_pipe)
    add_lora(m, rank=4, alpha=4)
    for dt, torch_dt in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        p = save_lora(tmp_path / f"x_{dt}.safetensors", lora_state_dict(m), alpha=4, dtype=dt, metadata=_meta())
        tensors, meta = read_lora(p)
        assert {v.dtype for k, v in tensors.items() if not k.endswith(".alpha")} == {torch_dt}
        assert meta["rank"] == "4" and meta["trigger_word"] == "sks" and meta["step"] == "10"
        assert meta["base_model"] == "tiny" and meta["recipe"] == "motion" and meta["wanlora_version"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_bf16.safetensors", "x_fp16.safetensors",
                                                           "x_fp32.safetensors"]  # no temp files left


def _run_pipe(pipe, seed: int = 0):
    from PIL import Image

    img = Image.new("RGB", (32, 32), (180, 40, 40))
    g = torch.Generator().manual_seed(seed)
    return pipe(image=img, prompt="a red square moving right", height=32, width=32, num_frames=5,
                num_inference_steps=2, guidance_scale=1.0, output_type="pt", max_sequence_length=16,
                generator=g).frames


def test_pair_loads_into_the_stock_pipeline_and_changes_the_output(tiny_model: Path, tmp_path: Path) -> None:
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(tiny_model)
    base = _run_pipe(pipe)
    files = {}
    for which, expert, seed in (("transformer", "high_noise", 1), ("transformer_2", "low_noise", 2)):
        m = _expert(pipe, which)
        add_lora(m, rank=4, alpha=4)
        _randomise_lora(m, seed)
        files[expert] = save_lora(tmp_path / f"t_{expert}.safetensors", lora_state_dict(m), alpha=4,
                                  dtype="fp32", metadata=_meta(expert=expert))
    pipe.load_lora_weights(str(files["high_noise"]), adapter_name="high")
    pipe.load_lora_weights(str(files["low_noise"]), adapter_name="low", load_into_transformer_2=True)
    assert pipe.get_list_adapters() == {"transformer": ["high"], "transformer_2": ["low"]}
    with_lora = _run_pipe(pipe)
    assert with_lora.shape == base.shape
    assert (with_lora - base).abs().max() > 1e-3


@pytest.mark.parametrize("rank,alpha", [(4, 8.0), (4, 1.0)])
def test_alpha_not_equal_rank_loads_with_the_right_scale(tiny_pipe, tiny_model: Path, tmp_path: Path,
                                                          rank: int, alpha: float) -> None:
    """diffusers' output with our file == our own peft model (scale alpha/rank) == manual W + (α/r)·B·A."""
    from diffusers import WanImageToVideoPipeline

    m = _expert(tiny_pipe, "transformer_2")
    add_lora(m, rank=rank, alpha=alpha)
    _randomise_lora(m, 5)
    path = save_lora(tmp_path / "low.safetensors", lora_state_dict(m), alpha=alpha, dtype="fp32",
                     metadata=_meta(rank=rank, alpha=alpha))
    pipe = WanImageToVideoPipeline.from_pretrained(tiny_model)
    pipe.load_lora_weights(str(path), load_into_transformer_2=True)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 36, 2, 8, 8, generator=g)
    txt = torch.randn(1, 7, 32, generator=g)
    t = torch.tensor([500.0])
    with torch.no_grad():
        ours = m(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0]
        loaded = pipe.transformer_2(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0]
        # manual: fold (α/r)·B·A into a clean copy of the base weights
        manual = _expert(tiny_pipe, "transformer_2")
        params = dict(m.named_parameters())
        for name, mod in manual.named_modules():
            a = params.get(f"{name}.lora_A.default.weight")
            if a is not None:
                b = params[f"{name}.lora_B.default.weight"]
                mod.weight += (alpha / rank) * (b @ a)
        folded = manual(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0]
        plain = tiny_pipe.transformer_2(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0]
    assert torch.allclose(ours, folded, atol=1e-5)
    assert torch.allclose(loaded, folded, atol=1e-5)
    assert (loaded - plain).abs().max() > 1e-3
