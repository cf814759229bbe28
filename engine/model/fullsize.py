"""A full-size Wan 2.2 I2V A14B with random weights, for ``wanlora trial`` on a GPU before the 70 GB download.

It honours the contract of :func:`engine.model.load.load_parts` (a :class:`WanParts`) with the real
architectures — both 40-block experts (5120 wide, 36 input channels), the Wan VAE, the UMT5-XXL encoder —
and the tokenizer / scheduler files of the tiny model.  Speed and memory do not depend on weight values,
so everything after loading is the code path users run.

No weight ever exists on the CPU: modules are built on the ``meta`` device and get their storage where a
real checkpoint would put its tensors.  An expert asked for on the GPU is materialised there at once; one
asked for on ``"cpu"`` (the quantised, FSDP and offloaded plans, which place it block by block) stays on
``meta`` and :func:`materialize_` gives each block its storage on the device the placement code moves it
to (``engine.model.quant`` calls it) — so a 24 GB card never holds a whole bf16 expert, as with a real one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn
from wanlora.engine.config.experts import HIGH, LOW
from wanlora.engine.model import single_file
from wanlora.engine.model.folder import ModelLoadError, WanParts
from wanlora.engine.model.meta import has_meta, materialize_
from wanlora.engine.model.quant import quantize_text_encoder
from wanlora.engine.model.weight_files import check_files, config_for

BOUNDARY_RATIO = 0.9
# Wan-AI/Wan2.2-I2V-A14B-Diffusers: transformer/config.json and transformer_2/config.json (identical).
TRANSFORMER_CONFIG: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024,
    pos_embed_seq_len=None,
)
# text_encoder/config.json: the encoder of google/umt5-xxl.
UMT5_XXL_CONFIG: dict[str, Any] = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
    dropout_rate=0.1, layer_norm_epsilon=1e-6, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
    decoder_start_token_id=0,
)
# scheduler/scheduler_config.json of the I2V A14B model (UniPC, flow sigmas, shift 5).
SCHEDULER_CONFIG: dict[str, Any] = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
                                        num_train_timesteps=1000)


def _on_meta(fn, *args: Any, dtype: torch.dtype | None = None, **kwargs: Any) -> Any:
    prev = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            return fn(*args, **kwargs)
    finally:
        torch.set_default_dtype(prev)


def random_expert(dtype: torch.dtype, device: torch.device | str, config: dict[str, Any] | None = None) -> nn.Module:
    """One frozen expert; on ``device`` now, or left on ``meta`` when ``device`` is ``"cpu"`` (see module doc)."""
    from diffusers import WanTransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    cfg = dict(config or TRANSFORMER_CONFIG)
    m = _on_meta(WanTransformer3DModel, dtype=dtype, **cfg)
    for name in WanTransformer3DModel._keep_in_fp32_modules:  # as from_pretrained(torch_dtype=bf16) keeps them
        for mn, mod in m.named_modules():
            if mn.split(".")[-1] == name:
                mod.float()
    target = torch.device(device)
    real = target if target.type != "cpu" else None
    # RoPE tables are computed, not loaded: build them where the model will run (tiny, not weights).
    with torch.device(real or "cpu"):
        m.rope = WanRotaryPosEmbed(cfg["attention_head_dim"], cfg["patch_size"], cfg["rope_max_seq_len"])
    m.requires_grad_(False)
    if real is not None:
        materialize_(m, real)
    return m


def random_vae(dtype: torch.dtype, device: torch.device | str):
    """The Wan VAE (diffusers' defaults are the Wan 2.1/2.2-A14B VAE, latent constants included)."""
    from diffusers import AutoencoderKLWan

    vae = _on_meta(AutoencoderKLWan, dtype=dtype)
    materialize_(vae, device)
    return vae.requires_grad_(False).eval()


def random_text_encoder(dtype: torch.dtype, device: torch.device | str, quant: str = "none"):
    """UMT5-XXL on ``meta``, then placed (and quantised Linear by Linear) by the product's own code."""
    from transformers import UMT5Config, UMT5EncoderModel

    te = _on_meta(UMT5EncoderModel, UMT5Config(**UMT5_XXL_CONFIG), dtype=dtype)
    te.requires_grad_(False).eval()
    quantize_text_encoder(te, quant, torch.device(device))  # type: ignore[arg-type]
    materialize_(te, device)  # whatever quantisation left (norms, embeddings, everything for "none")
    return te


def write_model_folder(root: Path, tokenizer_from: Path) -> Path:
    """The small files a diffusers folder has besides weights: index, configs, scheduler, tokenizer.

    Previews read the scheduler from here and the caches key on these files, so a trial never reuses
    (or pollutes) the cache entries of the user's real model.
    """
    root = Path(root)
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    index = {"_class_name": "WanImageToVideoPipeline", "boundary_ratio": BOUNDARY_RATIO, "random_weights": True,
             "transformer": ["diffusers", "WanTransformer3DModel"],
             "transformer_2": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
             "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
             "scheduler": ["diffusers", "UniPCMultistepScheduler"]}
    (root / "model_index.json").write_text(json.dumps(index, indent=1))
    sched = {"_class_name": "UniPCMultistepScheduler", **SCHEDULER_CONFIG}
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=1))
    for sub, cfg in (("transformer", TRANSFORMER_CONFIG), ("transformer_2", TRANSFORMER_CONFIG),
                     ("text_encoder", UMT5_XXL_CONFIG), ("vae", {"_class_name": "AutoencoderKLWan"})):
        (root / sub).mkdir(exist_ok=True)
        (root / sub / "config.json").write_text(json.dumps({"random_weights": True, **cfg}, indent=1, default=list))
    if not (root / "tokenizer").is_dir():
        shutil.copytree(Path(tokenizer_from) / "tokenizer", root / "tokenizer")
    return root


class RandomFullSize:
    """A ``load_parts``-compatible source of the full-size model with random weights (see module doc)."""

    def __init__(self, root: Path, tokenizer_from: Path) -> None:
        self.root = write_model_folder(root, tokenizer_from)

    def __call__(self, name_or_path: str, experts: list[str], *, dtype: torch.dtype, device: torch.device | str,
                 boundary_override: float | str = "auto", text_encoder: bool = True,
                 vae_dtype: torch.dtype | None = None, expert_device: torch.device | str | None = None,
                 text_encoder_quant: str = "none", files: dict[str, Path] | None = None,
                 transformer_quant: str = "none") -> WanParts:
        """``files``: experts the job names as single files (``model.*_noise_file``) are read from them through
        the real single-file loader (so a trial times it); every other part stays random."""
        from transformers import AutoTokenizer

        ratio = BOUNDARY_RATIO if boundary_override == "auto" else float(boundary_override)
        parts = WanParts(root=self.root, boundary_ratio=ratio)
        files = {k: Path(v) for k, v in (files or {}).items() if k in (HIGH, LOW)}
        if files:
            errors = check_files(files, self.root)[0]
            if errors:
                raise ModelLoadError("; ".join(errors))
            parts.files = dict(files)
        for e in experts:
            dev = device if expert_device is None else expert_device
            if e in files:
                parts.experts[e] = single_file.load_expert_file(files[e], config_for(e, self.root), dtype=dtype,
                                                                device=dev, fp8_base=transformer_quant == "fp8", part=e)
            else:
                parts.experts[e] = random_expert(dtype, dev)
        parts.vae = random_vae(vae_dtype or dtype, device)
        if text_encoder:
            parts.tokenizer = AutoTokenizer.from_pretrained(self.root / "tokenizer")
            parts.text_encoder = random_text_encoder(dtype, device, text_encoder_quant)
        parts.load_expert = lambda name, dt, dev: random_expert(dt, dev)  # previews of an untrained expert
        parts.load_vae = lambda dt, dev: random_vae(dt, dev)
        return parts


__all__ = ["HIGH", "LOW", "RandomFullSize", "materialize_", "has_meta", "random_expert", "random_vae",
           "random_text_encoder", "write_model_folder", "TRANSFORMER_CONFIG", "UMT5_XXL_CONFIG"]
