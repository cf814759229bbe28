"""Key maps between the layouts users' files come in and the diffusers modules we train.

Names only, never tensors: the loader streams each tensor from disk to its module under the mapped name.

- transformer: original Wan / ComfyUI keys (``blocks.0.self_attn.q.weight``, maybe ``model.diffusion_model.``-
  prefixed) → diffusers (``blocks.0.attn1.to_q.weight``) through diffusers' own single-file converter
  (``convert_wan_transformer_to_diffusers``) applied to the key names; the reverse (for writing ComfyUI files)
  is ours, tested to invert diffusers' map.
- VAE: original Wan keys (``decoder.upsamples.4.residual.0.gamma``) → diffusers.  diffusers' converter covers the
  real Wan 2.1 VAE shape only (it hard-codes where the decoder's blocks start); our map derives the block layout
  from the config, so it also covers other sizes (the tiny model) and is tested equal to diffusers' on the real one.
- text encoder: ComfyUI's UMT5 files already use the transformers names; only a prefix may differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# ---------------------------------------------------------------- transformer


def wan_to_diffusers_transformer(keys: Iterable[str]) -> dict[str, str]:
    """{file key: diffusers key} for original-Wan / ComfyUI expert keys, via diffusers' converter (names only)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    keys = list(keys)
    converted = convert_wan_transformer_to_diffusers({k: k for k in keys})  # values ride along unchanged
    return {orig: new for new, orig in converted.items()}


_TOP = {
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    "proj_out.": "head.head.",
}
_IN_BLOCK = (
    (".attn1.", ".self_attn."), (".attn2.", ".cross_attn."),
    (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."), (".to_out.0.", ".o."),
    (".ffn.net.0.proj.", ".ffn.0."), (".ffn.net.2.", ".ffn.2."),
    (".norm2.", ".norm3."),  # diffusers' affine cross-attention norm is the original's norm3
)


def diffusers_to_wan_transformer(key: str, prefix: str = "") -> str:
    """One diffusers expert key → the original Wan name (``prefix`` = ``model.diffusion_model.`` for ComfyUI)."""
    if key == "scale_shift_table":
        return prefix + "head.modulation"
    for a, b in _TOP.items():
        if key.startswith(a):
            return prefix + b + key[len(a):]
    m = re.match(r"(blocks\.\d+)(\..*)$", key)
    if m:
        head, rest = m.groups()
        if rest == ".scale_shift_table":
            return f"{prefix}{head}.modulation"
        for a, b in _IN_BLOCK:
            rest = rest.replace(a, b)
        return prefix + head + rest
    return prefix + key


# ---------------------------------------------------------------- VAE


def _resnet(rest: str) -> str:
    for a, b in ((".norm1.", ".residual.0."), (".conv1.", ".residual.2."), (".norm2.", ".residual.3."),
                 (".conv2.", ".residual.6."), (".conv_shortcut.", ".shortcut.")):
        if rest.startswith(a):
            return b + rest[len(a):]
    return rest


def _decoder_upsample_index(cfg: dict[str, Any]) -> dict[tuple[int, str, int], int]:
    """(up_block, 'resnets'|'upsamplers', k) → index in the original flat ``decoder.upsamples`` list."""
    nrb, stages = int(cfg["num_res_blocks"]), len(cfg["dim_mult"])
    out: dict[tuple[int, str, int], int] = {}
    j = 0
    for i in range(stages):
        for k in range(nrb + 1):
            out[(i, "resnets", k)] = j
            j += 1
        if i != stages - 1:
            out[(i, "upsamplers", 0)] = j
            j += 1
    return out


def diffusers_to_wan_vae(key: str, cfg: dict[str, Any]) -> str:
    """One diffusers ``AutoencoderKLWan`` key → the original Wan 2.1 VAE name (ComfyUI's wan_2.1_vae layout)."""
    for a, b in (("quant_conv.", "conv1."), ("post_quant_conv.", "conv2.")):
        if key.startswith(a):
            return b + key[len(a):]
    side, _, rest = key.partition(".")
    if side not in ("encoder", "decoder"):
        return key
    for a, b in (("conv_in.", "conv1."), ("norm_out.", "head.0."), ("conv_out.", "head.2.")):
        if rest.startswith(a):
            return f"{side}.{b}{rest[len(a):]}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)(\..*)$", rest)
    if m:
        kind, n, tail = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return f"{side}.middle.1{tail}"
        return f"{side}.middle.{2 * n}{_resnet(tail)}"
    m = re.match(r"down_blocks\.(\d+)(\..*)$", rest)
    if m:
        return f"{side}.downsamples.{m.group(1)}{_resnet(m.group(2))}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)(\..*)$", rest)
    if m:
        j = _decoder_upsample_index(cfg)[(int(m.group(1)), m.group(2), int(m.group(3)))]
        tail = m.group(4)
        return f"decoder.upsamples.{j}{_resnet(tail) if m.group(2) == 'resnets' else tail}"
    return key


def diffusers_covers_vae(cfg: dict[str, Any]) -> bool:
    """diffusers' VAE converter hard-codes the real Wan 2.1 VAE block layout (2 res blocks, 4 stages, no attention)."""
    return int(cfg["num_res_blocks"]) == 2 and len(cfg["dim_mult"]) == 4 and not cfg.get("attn_scales") \
        and not cfg.get("is_residual")


def wan_to_diffusers_vae(file_keys: Iterable[str], model_keys: Iterable[str], cfg: dict[str, Any]) -> dict[str, str]:
    """{file key: diffusers key}: diffusers' converter where it covers the config, else our map inverted."""
    file_keys = list(file_keys)
    if diffusers_covers_vae(cfg):
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        return {orig: new for new, orig in convert_wan_vae_to_diffusers({k: k for k in file_keys}).items()}
    inverse = {diffusers_to_wan_vae(k, cfg): k for k in model_keys}
    return {k: inverse.get(k, k) for k in file_keys}


# ---------------------------------------------------------------- text encoder


def te_to_transformers(file_keys: Iterable[str], prefix: str) -> dict[str, str]:
    """ComfyUI / transformers UMT5 keys (maybe prefixed) → ``UMT5EncoderModel`` names; decoder keys dropped."""
    out = {}
    for k in file_keys:
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):]
        if name.startswith(("decoder.", "lm_head.")):
            continue
        out[k] = name
    return out


def wan_t5_to_transformers(file_keys: Iterable[str]) -> dict[str, str]:
    """The original Wan release's UMT5 encoder (``models_t5_umt5-xxl-enc-bf16.pth``: ``blocks.N.attn.q``,
    ``ffn.gate.0`` / ``fc1`` / ``fc2``, per-block ``pos_embedding``) → ``UMT5EncoderModel`` names.

    Wan's feed-forward is ``fc2(fc1(x) * gelu(gate(x)))``; transformers' gated-gelu is
    ``wo(gelu(wi_0(x)) * wi_1(x))``, so gate.0 → wi_0 and fc1 → wi_1.
    """
    inner = {"norm1.weight": "layer.0.layer_norm.weight", "attn.q.weight": "layer.0.SelfAttention.q.weight",
             "attn.k.weight": "layer.0.SelfAttention.k.weight", "attn.v.weight": "layer.0.SelfAttention.v.weight",
             "attn.o.weight": "layer.0.SelfAttention.o.weight",
             "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
             "norm2.weight": "layer.1.layer_norm.weight", "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
             "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight", "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight"}
    out = {}
    for k in file_keys:
        if k == "token_embedding.weight":
            out[k] = "shared.weight"
        elif k == "norm.weight":
            out[k] = "encoder.final_layer_norm.weight"
        else:
            m = re.match(r"blocks\.(\d+)\.(.+)$", k)
            if m and m.group(2) in inner:
                out[k] = f"encoder.block.{m.group(1)}.{inner[m.group(2)]}"
    return out
