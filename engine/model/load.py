"""Load the parts of a Wan 2.2 I2V model the trainer needs — and only those, from where the job says.

Only the experts being trained are read (a 14B expert is 27 GiB); the VAE and the text encoder always are.
A plain job reads them from one diffusers folder or hub id (``engine.model.folder``); a job that names single
files for some parts (``model.*_file``) reads those from the files and the rest from the folder
(``engine.model.part_sources``).  Anything missing becomes a :class:`ModelLoadError` that says what is
missing and how to fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from wanlora.engine.model.folder import (
    EXPERT_SUBFOLDER,
    ModelLoadError,
    WanParts,
    boundary_ratio,
    check_parts,
    load_expert,
    load_text_encoder,
    load_vae,
    read_model_index,
    resolve_model_path,
)
from wanlora.engine.model.part_sources import load_parts_with_files

__all__ = ["ModelLoadError", "WanParts", "load_parts"]


def load_parts(name_or_path: str, experts: list[str], *, dtype: torch.dtype, device: torch.device | str,
               boundary_override: float | str = "auto", text_encoder: bool = True,
               vae_dtype: torch.dtype | None = None, expert_device: torch.device | str | None = None,
               text_encoder_quant: str = "none", files: dict[str, Any] | None = None,
               transformer_quant: str = "none") -> WanParts:
    """Load the trained ``experts`` (subset of HIGH/LOW), the VAE and (optionally) the text encoder.

    ``expert_device`` (default ``device``) = "cpu" keeps the experts in RAM so a quantiser can place them
    on the GPU block by block (a bf16 14B expert would not fit a 24 GB card whole).  ``files`` ({part: path},
    from the job's ``model.*_file`` keys) loads those parts from single files (``part_sources``);
    ``transformer_quant`` = "fp8" keeps an fp8-scaled file's weights fp8 as stored.
    """
    if files:
        return load_parts_with_files(name_or_path, experts, {k: Path(v) for k, v in files.items()}, dtype=dtype,
                                     device=device, boundary_override=boundary_override, text_encoder=text_encoder,
                                     vae_dtype=vae_dtype, expert_device=expert_device,
                                     text_encoder_quant=text_encoder_quant, transformer_quant=transformer_quant)
    subfolders = [EXPERT_SUBFOLDER[e] for e in experts] + ["vae"]
    if text_encoder:
        subfolders += ["text_encoder", "tokenizer"]
    root = resolve_model_path(name_or_path, subfolders)
    read_model_index(root)
    check_parts(root, subfolders)
    parts = WanParts(root=root, boundary_ratio=boundary_ratio(root, boundary_override))
    for e in experts:
        parts.experts[e] = load_expert(root, e, dtype, device if expert_device is None else expert_device)
    parts.vae = load_vae(root, vae_dtype or dtype, device)
    if text_encoder:
        parts.tokenizer, parts.text_encoder = load_text_encoder(root, dtype, device, text_encoder_quant)
    return parts
