"""``wanlora model pull``: download only the parts a job needs, in one precision, into the Hugging Face cache.

A rented GPU is billed by the hour: the whole diffusers repo is ~70+ GB per precision, while a job that trains
only the high-noise expert in fp8 needs one 14 GB file, the VAE, the text encoder and the tokenizer.  The plan
(which files, how many bytes, how much free disk) is printed before anything is fetched; downloads go through
``huggingface_hub`` (progress bars, resume of interrupted files) into ``$HF_HOME``.  Torch-free.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wanlora.engine.model import weight_files as wf

COMFY_22 = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
COMFY_21 = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
DIFFUSERS = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
PULL_PARTS = (*wf.FILE_PARTS, wf.TOKENIZER)
PRECISIONS = ("fp16", "fp8_scaled")


def catalog(part: str, precision: str) -> list[tuple[str, str]]:
    """(repo, file) pairs that hold ``part`` in ``precision`` (ComfyUI's repackaged single files; the tokenizer,
    which ComfyUI does not ship as files, from the diffusers repo's ``tokenizer/``)."""
    if part in wf.EXPERTS:
        return [(COMFY_22, f"split_files/diffusion_models/wan2.2_i2v_{part}_14B_{precision}.safetensors")]
    if part == wf.TEXT_ENCODER:
        name = "umt5_xxl_fp16" if precision == "fp16" else "umt5_xxl_fp8_e4m3fn_scaled"
        return [(COMFY_21, f"split_files/text_encoders/{name}.safetensors")]
    if part == wf.VAE:
        return [(COMFY_22, "split_files/vae/wan_2.1_vae.safetensors")]
    if part == wf.TOKENIZER:
        return [(DIFFUSERS, "model_index.json"), (DIFFUSERS, "tokenizer/")]  # a folder: every file under it
    raise ValueError(f"unknown part {part!r}; parts are {', '.join(PULL_PARTS)}")


class PullError(Exception):
    """Nothing could be (or was) downloaded; the message says why and the fix."""


@dataclass
class PlannedFile:
    part: str
    repo: str
    filename: str
    size: int
    cached: bool


@dataclass
class Plan:
    files: list[PlannedFile]
    cache_dir: Path
    free_bytes: int

    @property
    def download_bytes(self) -> int:
        return sum(f.size for f in self.files if not f.cached)

    @property
    def fits(self) -> bool:
        return self.download_bytes <= self.free_bytes


def needed_parts(job: Any) -> list[str]:
    """The parts a job reads: the trained experts, the VAE, the text encoder + tokenizer — minus parts the job
    already gives as local files (the tokenizer is still needed when the text encoder is a file)."""
    parts = [p for p, on in ((wf.HIGH, job.multistage.high_noise), (wf.LOW, job.multistage.low_noise)) if on]
    parts += [wf.VAE, wf.TEXT_ENCODER, wf.TOKENIZER]
    have = {p for p in wf.FILE_PARTS if str(getattr(job.model, f"{p}_file", "") or "").strip()}
    return [p for p in parts if p not in have]


def hub_cache_dir() -> Path:
    """Where huggingface_hub puts files: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"


def free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


# Sizes: repo -> {path: bytes} for the asked paths (folders expanded).  The default asks the hub; tests pass a fake.
SizeLookup = Callable[[str, list[str]], dict[str, int]]
CacheLookup = Callable[[str, str], bool]


def hub_sizes(repo: str, paths: list[str]) -> dict[str, int]:
    from huggingface_hub import HfApi

    api = HfApi()
    out: dict[str, int] = {}
    files = [p for p in paths if not p.endswith("/")]
    for info in api.get_paths_info(repo, files):
        out[info.path] = int(getattr(info, "size", 0) or 0)
    for folder in [p for p in paths if p.endswith("/")]:
        for info in api.list_repo_tree(repo, path_in_repo=folder.rstrip("/"), recursive=True):
            if getattr(info, "size", None) is not None and not str(info.path).endswith("/"):
                out[info.path] = int(info.size)
    return out


def in_cache(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: the trainer may read the Hugging Face cache only (as ``model.load`` does)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def snapshot_gaps(repo: str, revision: str | None, subfolders: list[str], cache_dir: Path | None = None) -> list[str]:
    """What the cached snapshot of ``repo`` lacks of ``model_index.json`` + ``subfolders`` (``["transformer_2/"]``,
    or everything when the repo is not cached at all): what a trainer with ``HF_HUB_OFFLINE`` set cannot load.
    Reads the cache only (``$HF_HUB_CACHE`` / ``$HF_HOME`` as they are now), never the network."""
    from huggingface_hub import try_to_load_from_cache

    wanted = [f"{s}/" for s in subfolders]
    index = try_to_load_from_cache(repo, "model_index.json", cache_dir=str(cache_dir or hub_cache_dir()),
                                   revision=revision)
    if not isinstance(index, str):
        return ["model_index.json", *wanted]
    snapshot = Path(index).parent
    return [w for w in wanted if not _has_a_file(snapshot / w)]


def _has_a_file(folder: Path) -> bool:
    try:
        return any(p.is_file() for p in folder.iterdir())
    except OSError:
        return False


def plan(parts: list[str], precision: str = "fp8_scaled", *, sizes: SizeLookup = hub_sizes,
         cached: CacheLookup = in_cache, cache_dir: Path | None = None) -> Plan:
    """Which files to fetch for ``parts``, their sizes, what is cached already, and the free disk."""
    if precision not in PRECISIONS:
        raise PullError(f"--precision must be one of {', '.join(PRECISIONS)}")
    wanted: dict[str, list[tuple[str, str]]] = {}
    for part in parts:
        for repo, name in catalog(part, precision):
            wanted.setdefault(repo, []).append((part, name))
    files: list[PlannedFile] = []
    for repo, items in wanted.items():
        try:
            got = sizes(repo, [n for _, n in items])
        except Exception as e:  # network, auth, 404 …: one clear line, nothing downloaded
            raise PullError(_hub_error(repo, e)) from None
        for part, name in items:
            names = [k for k in got if k.startswith(name)] if name.endswith("/") else ([name] if name in got else [])
            if not names:
                raise PullError(f"{repo} has no {name} (needed for {wf.PART_LABEL[part]}); the repo layout changed? "
                                "download the file yourself and set the job's model.*_file key")
            files += [PlannedFile(part, repo, n, got[n], cached(repo, n)) for n in sorted(names)]
    cdir = cache_dir or hub_cache_dir()
    return Plan(files=files, cache_dir=cdir, free_bytes=free_bytes(cdir))


def _hub_error(repo: str, e: Exception) -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return (f"HF_HUB_OFFLINE is set, so {repo} cannot be listed; unset it on a machine with network access, "
                "or copy the files here and point the job's model.*_file keys at them")
    why = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return (f"cannot reach the model hub at {endpoint} to list {repo} ({why}); check the network, HF_ENDPOINT and "
            "HF_TOKEN — nothing was downloaded")


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def render_plan(p: Plan) -> str:
    rows = [f"  {f.part:<13} {f.repo}/{f.filename}  {_gb(f.size)}{'  (in the cache)' if f.cached else ''}"
            for f in p.files]
    head = (f"{len(p.files)} files, {_gb(p.download_bytes)} to download into {p.cache_dir} "
            f"(free: {_gb(p.free_bytes)})")
    return "\n".join([head, *rows]) + "\n"


def download(p: Plan) -> dict[str, Path]:
    """Fetch the planned files (resuming partial ones); returns {part: local path} of the single-file parts."""
    from huggingface_hub import hf_hub_download

    if not p.fits:
        raise PullError(f"not enough disk: {_gb(p.download_bytes)} to download, {_gb(p.free_bytes)} free in "
                        f"{p.cache_dir}; free some space or set HF_HOME to a bigger disk (e.g. /workspace/hf)")
    out: dict[str, Path] = {}
    for f in p.files:
        try:
            local = Path(hf_hub_download(f.repo, f.filename, cache_dir=str(p.cache_dir)))
        except Exception as e:
            raise PullError(_hub_error(f.repo, e)) from None
        if f.part in wf.FILE_PARTS:
            out[f.part] = local
    return out
