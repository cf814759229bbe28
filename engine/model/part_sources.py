"""Where each part of the model comes from when the job names single files for some of them.

``model.high_noise_file`` / ``low_noise_file`` / ``text_encoder_file`` / ``vae_file`` each replace one
sub-folder of ``model.name_or_path``; the parts not given as files still come from it (a local diffusers
folder, or only those sub-folders of a hub id — nothing else is downloaded).  Configs for file parts come from
the local folder when it has them, else from our bundled Wan 2.2 I2V A14B copy; the boundary likewise (0.9
for I2V A14B unless the job sets ``model.boundary_ratio``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from wanlora.engine.model import folder as F
from wanlora.engine.model import single_file as sf
from wanlora.engine.model import weight_files as wf
from wanlora.engine.model.quant import quantize_text_encoder


def job_files(model_section: Any) -> dict[str, Path]:
    """{part: path} of the file keys a job's ``[model]`` section sets (empty strings are unset)."""
    out = {}
    for part in wf.FILE_PARTS:
        value = str(getattr(model_section, f"{part}_file", "") or "").strip()
        if value:
            out[part] = Path(value).expanduser()
    return out


def _is_local(name: str) -> bool:
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or not F.HUB_ID.match(name)


def resolve_root(name_or_path: str, from_folder: list[str]) -> Path:
    """The folder the non-file parts (and configs) come from: the local folder, the hub snapshot of only
    ``from_folder``, or — when every needed part is a file — our bundled configs (no download)."""
    if _is_local(name_or_path):
        return F.resolve_model_path(name_or_path, from_folder)
    if from_folder:
        return F.resolve_model_path(name_or_path, from_folder)
    return wf.bundled_config_dir()


def fp8_files_direct(files: dict[str, Path], experts: list[str], quant: str, low_vram: bool) -> bool:
    """An fp8 job whose every trained expert is an fp8-scaled file loads straight onto the GPU: the file is
    already the fp8 base, so there is nothing to quantise block by block from host memory."""
    if quant != "fp8" or low_vram or not experts:
        return False
    try:
        return all(e in files and wf.identify(files[e]).precision == "fp8_scaled" for e in experts)
    except wf.WeightFileError:
        return False


def file_variant(parts: Any, part: str) -> str:
    """Identity of a part loaded from a file (path, size, mtime), for cache keys; '' for folder parts."""
    path = getattr(parts, "files", {}).get(part)
    if path is None:
        return ""
    stats = [f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in wf.shard_files(Path(path))]
    return "file:" + "|".join(stats)


def load_parts_with_files(name_or_path: str, experts: list[str], files: dict[str, Path], *, dtype: torch.dtype,
                          device: torch.device | str, boundary_override: float | str = "auto",
                          text_encoder: bool = True, vae_dtype: torch.dtype | None = None,
                          expert_device: torch.device | str | None = None, text_encoder_quant: str = "none",
                          transformer_quant: str = "none") -> F.WanParts:
    """``load.load_parts`` for a job that names part files; the others come from ``name_or_path``."""
    needed = list(experts) + [wf.VAE] + ([wf.TEXT_ENCODER] if text_encoder else [])
    used = {p: files[p] for p in needed if p in files}
    from_folder = [wf.SUBFOLDER[p] for p in needed if p not in files]
    if text_encoder:
        from_folder.append("tokenizer")
    root = resolve_root(name_or_path, from_folder)
    if (root / "model_index.json").is_file():
        F.read_model_index(root)
    try:
        F.check_parts(root, from_folder)
    except F.ModelLoadError as e:
        if text_encoder and wf.TEXT_ENCODER in files and not (root / "tokenizer").is_dir():
            raise F.ModelLoadError(f"{e}; the UMT5 tokenizer is not inside {files[wf.TEXT_ENCODER].name}: set "
                                   "model.name_or_path to Wan-AI/Wan2.2-I2V-A14B-Diffusers and run "
                                   "`wanlora model pull --parts tokenizer` (~20 MB) once") from None
        raise
    config_root = None if root == wf.bundled_config_dir() else root
    errors, _warnings, _ = wf.check_files(files, config_root)  # every given file: a swap needs both to be seen
    if errors:
        raise F.ModelLoadError("; ".join(errors))
    index_root = root if (root / "model_index.json").is_file() else wf.bundled_config_dir()
    parts = F.WanParts(root=root, boundary_ratio=F.boundary_ratio(index_root, boundary_override))
    parts.files = dict(files)  # an untrained expert's file too: previews read it
    parts.load_expert = lambda name, dt, dev: load_expert_part(parts, name, dt, dev)  # previews of an untrained expert
    parts.load_vae = lambda dt, dev: load_vae_part(parts, dt, dev)
    try:
        for e in experts:
            dev = device if expert_device is None else expert_device
            if e in used:
                parts.experts[e] = sf.load_expert_file(used[e], wf.config_for(e, config_root), dtype=dtype, device=dev,
                                                       fp8_base=transformer_quant == "fp8", part=e)
            else:
                parts.experts[e] = F.load_expert(root, e, dtype, dev)
        parts.vae = load_vae_part(parts, vae_dtype or dtype, device)
        if text_encoder:
            parts.tokenizer, parts.text_encoder = load_text_encoder_part(parts, dtype, device, text_encoder_quant)
    except (sf.SingleFileError, wf.WeightFileError) as e:
        raise F.ModelLoadError(str(e)) from None
    return parts


def _config_root(parts: Any) -> Path | None:
    return None if parts.root == wf.bundled_config_dir() else parts.root


def load_expert_part(parts: Any, expert: str, dtype: torch.dtype, device: torch.device | str):
    """An expert from the job's file if it named one, else from the model folder (previews of an untrained expert)."""
    path = getattr(parts, "files", {}).get(expert)
    if path is None:
        return F.load_expert(parts.root, expert, dtype, device)
    return sf.load_expert_file(path, wf.config_for(expert, _config_root(parts)), dtype=dtype, device=device, part=expert)


def load_vae_part(parts: Any, dtype: torch.dtype, device: torch.device | str):
    path = getattr(parts, "files", {}).get(wf.VAE)
    if path is None:
        return F.load_vae(parts.root, dtype, device)
    return sf.load_vae_file(path, wf.config_for(wf.VAE, _config_root(parts)), dtype=dtype, device=device)


def load_text_encoder_part(parts: Any, dtype: torch.dtype, device: torch.device | str, quant: str = "none"):
    """(tokenizer, encoder): the tokenizer always from the model folder (hub: ``tokenizer/`` only, ~20 MB)."""
    from transformers import AutoTokenizer

    path = getattr(parts, "files", {}).get(wf.TEXT_ENCODER)
    if path is None:
        return F.load_text_encoder(parts.root, dtype, device, quant)
    tok = AutoTokenizer.from_pretrained(parts.root / "tokenizer")
    fp8_file = quant == "fp8" and wf.identify(path).precision == "fp8_scaled"  # already the fp8 base: no host copy
    te = sf.load_text_encoder_file(path, wf.config_for(wf.TEXT_ENCODER, _config_root(parts)), dtype=dtype,
                                   device="cpu" if quant != "none" and not fp8_file else device, fp8_base=fp8_file)
    quantize_text_encoder(te, quant, torch.device(device))  # type: ignore[arg-type]
    return tok, te
