"""One diffusers folder of a Wan 2.2 I2V model: find it (local or a hub snapshot), check it, read each part.

``model.name_or_path`` is a local diffusers folder or a hub id ``org/name[@revision]``; a hub id is fetched for
only the sub-folders asked for (a 14B expert is 27 GiB).  The boundary between the experts comes from
``model_index.json`` unless the job sets ``model.boundary_ratio``.  :class:`WanParts` is what every model
source returns (this folder, ``part_sources``' single files, ``fullsize``'s random weights); anything missing
becomes a :class:`ModelLoadError` that says what is missing and how to fix it.  ``engine.model.load`` picks
the source for a job.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from wanlora.engine.config.experts import HIGH, LOW
from wanlora.engine.model.quant import quantize_text_encoder

EXPERT_SUBFOLDER = {HIGH: "transformer", LOW: "transformer_2"}
EXPERT_LABEL = {HIGH: "high-noise expert", LOW: "low-noise expert"}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_./-]+)?$")


class ModelLoadError(Exception):
    """The model cannot be loaded; the message names what is missing and the fix."""


@dataclass
class WanParts:
    """What the trainer holds: the trained experts, the VAE, the text encoder and tokenizer."""

    root: Path
    boundary_ratio: float
    experts: dict[str, Any] = field(default_factory=dict)  # HIGH/LOW -> WanTransformer3DModel
    vae: Any = None
    text_encoder: Any = None
    tokenizer: Any = None
    files: dict[str, Path] = field(default_factory=dict)  # parts loaded from single files (part_sources)
    # How previews get an expert that is not trained, or a VAE the latent cache freed: (dtype, device) → module.
    # None = from ``root`` (a diffusers folder); a model source without files (the trial's) sets its own.
    load_expert: Callable[..., Any] | None = None
    load_vae: Callable[..., Any] | None = None

    def expert(self, name: str, dtype: torch.dtype, device: torch.device | str) -> Any:
        return (self.load_expert or (lambda n, dt, dev: load_expert(self.root, n, dt, dev)))(name, dtype, device)

    def fresh_vae(self, dtype: torch.dtype, device: torch.device | str) -> Any:
        return (self.load_vae or (lambda dt, dev: load_vae(self.root, dt, dev)))(dtype, device)


def split_hub_id(name: str) -> tuple[str, str | None]:
    """``org/name@rev`` → (``org/name``, ``rev``)."""
    repo, _, rev = name.partition("@")
    return repo, (rev or None)


def _download_hint(repo: str, rev: str | None, patterns: list[str]) -> str:
    inc = " ".join(f"--include '{p}'" for p in patterns)
    r = f" --revision {rev}" if rev else ""
    cache = os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return (f"download it on a machine with network access: `hf download {repo}{r} {inc}` "
            f"(or unset HF_HUB_OFFLINE here), or set model.name_or_path to a local diffusers folder. "
            f"The full Wan 2.2 I2V A14B download is ~70 GB and lands in $HF_HOME (now {cache}): on RunPod/Vast "
            "put it on the persistent disk first, e.g. `export HF_HOME=/workspace/hf`")


def resolve_model_path(name_or_path: str, subfolders: list[str]) -> Path:
    """A local folder holding ``subfolders``: the path itself, or the hub snapshot (downloaded if allowed)."""
    local = Path(name_or_path).expanduser()
    if local.exists() or name_or_path.startswith((".", "/", "~")) or not HUB_ID.match(name_or_path):
        if not local.is_dir():
            raise ModelLoadError(f"model folder {local} does not exist; set model.name_or_path to a local "
                                 "diffusers folder or a hub id like Wan-AI/Wan2.2-I2V-A14B-Diffusers")
        return local
    repo, rev = split_hub_id(name_or_path)
    patterns = ["model_index.json"] + [f"{s}/*" for s in subfolders]
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub ships with diffusers
        raise ModelLoadError(f"huggingface_hub is not installed ({e}); pip install huggingface_hub") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        path = snapshot_download(repo, revision=rev, allow_patterns=patterns, local_files_only=offline)
    except Exception as e:  # LocalEntryNotFoundError, network errors, 401/404 …
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else f"{type(e).__name__}: {e}"
        raise ModelLoadError(f"cannot get {name_or_path} ({why}); {_download_hint(repo, rev, patterns)}") from None
    return Path(path)


def read_model_index(root: Path) -> dict[str, Any]:
    """``model_index.json`` of a diffusers folder."""
    try:
        return json.loads((Path(root) / "model_index.json").read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{root} has no model_index.json: not a diffusers model folder") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{root}/model_index.json is unreadable ({e})") from None


def boundary_ratio(root: Path, override: float | str = "auto") -> float:
    """The job's ``model.boundary_ratio`` if set, else the model's own (``model_index.json``)."""
    if override != "auto":
        return float(override)
    value = read_model_index(root).get("boundary_ratio")
    if value is None:
        raise ModelLoadError(f"{root}/model_index.json has no boundary_ratio (not a Wan 2.2 A14B model?); "
                             "set model.boundary_ratio (0.9 for I2V A14B)")
    return float(value)


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and (any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")))


def check_parts(root: Path, subfolders: list[str]) -> None:
    """Raise a clear error if any needed sub-folder (config + weights) is absent."""
    def complete(s: str) -> bool:
        if s in ("tokenizer", "scheduler"):  # configs only, no weights
            return (root / s).is_dir()
        return _has_weights(root / s)

    missing = [s for s in subfolders if not complete(s)]
    if missing:
        raise ModelLoadError(f"{root} is missing {', '.join(m + '/' for m in missing)} (config and weights); "
                             "re-download the model or point model.name_or_path at a complete folder")


def load_expert(root: Path, expert: str, dtype: torch.dtype, device: torch.device | str = "cpu"):
    """One expert (``transformer`` = high noise, ``transformer_2`` = low noise), frozen, on ``device``."""
    from diffusers import WanTransformer3DModel

    m = WanTransformer3DModel.from_pretrained(root, subfolder=EXPERT_SUBFOLDER[expert], torch_dtype=dtype)
    m.requires_grad_(False)
    return m.to(device)


def load_vae(root: Path, dtype: torch.dtype, device: torch.device | str = "cpu"):
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(root, subfolder="vae", torch_dtype=dtype)
    vae.requires_grad_(False).eval()
    return vae.to(device)


def load_text_encoder(root: Path, dtype: torch.dtype, device: torch.device | str = "cpu", quant: str = "none"):
    """(tokenizer, UMT5 encoder) — the encoder frozen and in eval mode, its Linears quantised per ``quant``."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    te = UMT5EncoderModel.from_pretrained(root, subfolder="text_encoder", dtype=dtype)
    te.requires_grad_(False).eval()
    quantize_text_encoder(te, quant, torch.device(device))  # type: ignore[arg-type]
    return tok, te
