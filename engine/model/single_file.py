"""Load (and write) Wan 2.2 parts from the single files users already have: ComfyUI / original Wan experts
(bf16, fp16, fp32 or fp8-scaled, one file or shards), the Wan 2.1 VAE, the UMT5 text encoder.

Each model is built empty (no memory) from a config — the job's local diffusers folder's, else our bundled
Wan 2.2 I2V A14B copy — and filled tensor by tensor straight from the file to the target device through
``safetensors.safe_open``: never a whole CPU copy of an expert.  fp8-scaled weights (ComfyUI's ``*.weight``
in e4m3 with a per-tensor ``*.scale_weight``) become our :class:`Fp8Linear` as they are when the job trains on
an fp8 base (no re-quantising); otherwise they are dequantised to the job's dtype one tensor at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from wanlora.engine.model import keymaps
from wanlora.engine.model import weight_files as wf
from wanlora.engine.model.fp8_linear import E4M3, Fp8Linear, fp8_eligible

LAYOUTS = ("comfyui", "wan", "diffusers")
PRECISIONS = ("fp32", "bf16", "fp16", "fp8_scaled")
_DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COMFY_PREFIX = "model.diffusion_model."
_FP8_BLOCK_LINEAR = (".self_attn.q.weight", ".self_attn.k.weight", ".self_attn.v.weight", ".self_attn.o.weight",
                     ".cross_attn.q.weight", ".cross_attn.k.weight", ".cross_attn.v.weight", ".cross_attn.o.weight",
                     ".ffn.0.weight", ".ffn.2.weight")


class SingleFileError(Exception):
    """A part file cannot be loaded into the model; the message names the file, what is wrong and the fix."""


# ---------------------------------------------------------------- streaming into an empty model
def _empty(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a module whose parameters take no memory (meta); buffers computed in __init__ stay real."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return factory()


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    mod_name, _, attr = name.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    if attr in mod._parameters:
        mod._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
    elif attr in mod._buffers:
        mod._buffers[attr] = tensor
    else:  # pragma: no cover - names come from the model's own state dict
        raise KeyError(name)


def _dev(device: torch.device | str) -> str:
    d = torch.device(device)
    return f"cuda:{d.index if d.index is not None else torch.cuda.current_device()}" if d.type == "cuda" else str(d)


def _tensors(f: Path, device: str, keep: Callable[[str], bool]):
    """(key, tensor) of one file, one tensor at a time on ``device``: safetensors through ``safe_open``, a torch
    zip checkpoint (.pth) memory-mapped (``weights_only``: plain tensors only, no code runs)."""
    if f.suffix in wf.PICKLE_SUFFIXES:
        sd = torch.load(f, map_location="cpu", mmap=True, weights_only=True)
        for key in ("state_dict", "model", "module"):
            if isinstance(sd.get(key), dict):
                sd = sd[key]
        for k in list(sd):
            if keep(k):
                yield k, sd.pop(k).to(device)
        return
    from safetensors import safe_open

    with safe_open(str(f), framework="pt", device=device) as sf:
        for k in sf.keys():
            if keep(k):
                yield k, sf.get_tensor(k)


def _scales(h: wf.Header) -> dict[str, torch.Tensor]:
    """Every ``*.scale_weight`` / ``*.weight_scale`` tensor (scalars; a few KB in all), keyed by its weight's name."""
    out: dict[str, torch.Tensor] = {}
    for f in sorted({h.where[k] for k in h.tensors if k.endswith(wf.SCALE_SUFFIXES)}):
        for k, t in _tensors(f, "cpu", lambda k: k.endswith(wf.SCALE_SUFFIXES)):
            suf = next(x for x in wf.SCALE_SUFFIXES if k.endswith(x))
            out[k[: -len(suf)] + ".weight"] = t.float()
    return out


def stream_into(model: nn.Module, h: wf.Header, key_map: Mapping[str, str], *, device: torch.device | str,
                dtype_of: Callable[[str], torch.dtype | None], fp8_module: Callable[[str], bool] | None = None,
                label: str = "", fp8_compute: bool = True) -> int:
    """Fill ``model``'s empty tensors from the file(s) of ``h``, one tensor at a time, on ``device``.

    ``key_map``: file key → model name.  ``dtype_of(name)``: the dtype to hold it in (None = as stored).
    fp8 weights are dequantised with their scale, unless ``fp8_module(module name)`` says to keep them as
    an :class:`Fp8Linear` (bytes as in the file).  Returns how many Linears stayed fp8.  Raises
    :class:`SingleFileError` if the file lacks tensors the model needs.
    """
    wanted = set(model.state_dict())
    scales = _scales(h) if any(t.dtype.startswith("F8") for t in h.tensors.values()) else {}
    dev = _dev(device)
    pending: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    loaded: set[str] = set()
    for f in h.files:
        for k, t in _tensors(f, dev, lambda k: key_map.get(k) in wanted):
            name = key_map[k]
            if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
                scale = scales.get(k, torch.ones(()))
                mod = name.rpartition(".")[0]
                if (t.dtype == E4M3 and scale.numel() == 1 and name.endswith(".weight") and fp8_module is not None
                        and fp8_module(mod)):
                    pending[mod] = (t, scale.reshape(()).to(t.device))
                    loaded.add(name)
                    continue
                shape = (-1,) + (1,) * (t.dim() - 1) if scale.numel() > 1 else ()
                t = t.to(torch.float32) * scale.to(t.device).reshape(shape)
            want = dtype_of(name)
            if want is not None and t.is_floating_point() and t.dtype != want:
                t = t.to(want)
            _assign(model, name, t)
            loaded.add(name)
    for mod, (q, scale) in pending.items():
        parent_name, _, child = mod.rpartition(".")
        parent = model.get_submodule(parent_name)
        lin = getattr(parent, child)
        bias = lin.bias
        if bias is not None and bias.device.type != "meta":
            bias = bias.detach().to(torch.bfloat16 if q.is_cuda else bias.dtype)
        setattr(parent, child, Fp8Linear(q, scale.float(), bias, fp8_compute=fp8_compute))
    missing = sorted(n for n in wanted - loaded if not _tied(model, n, loaded))
    if missing:
        raise SingleFileError(f"{h.path} lacks {len(missing)} tensors of {label or type(model).__name__} "
                              f"(e.g. {missing[0]}); it is incomplete or another model — check it with "
                              "`wanlora model find` or download it again")
    return len(pending)


def _tied(model: nn.Module, name: str, loaded: set[str]) -> bool:
    """UMT5's ``encoder.embed_tokens.weight`` is ``shared.weight``: tie it when only one was in the file."""
    pair = {"encoder.embed_tokens.weight": "shared.weight", "shared.weight": "encoder.embed_tokens.weight"}
    other = pair.get(name)
    if other is None or other not in loaded:
        return False
    mod_name, _, attr = name.rpartition(".")
    model.get_submodule(mod_name)._parameters[attr] = model.get_parameter(other)  # one Parameter, as transformers ties
    return True


def _finish(model: nn.Module, device: torch.device | str) -> nn.Module:
    model.requires_grad_(False)
    model.eval()
    return model.to(device)  # buffers computed at build (RoPE tables) follow the weights


def _keep_fp32(names: list[str] | None, dtype: torch.dtype) -> Callable[[str], torch.dtype]:
    keep = list(names or [])
    return lambda n: torch.float32 if keep and any(m in n.split(".") for m in keep) else dtype


# ---------------------------------------------------------------- the three kinds of part
def _config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def expert_key_map(h: wf.Header, layout: str, prefix: str) -> dict[str, str]:
    """File key → diffusers name for an expert file in ``layout``: ``prefix`` (``weight_files.transformer_prefix``'s
    decision) is stripped here, then original Wan names go through diffusers' converter (which itself strips only
    ``model.diffusion_model.``, so a ``diffusion_model.`` or ``model.`` file would otherwise miss every renamed key)."""
    bare = {k[len(prefix):]: k for k in h.tensors if k.startswith(prefix)}
    if layout == "diffusers":
        return {k: name for name, k in bare.items()}
    return {bare[name]: new for name, new in keymaps.wan_to_diffusers_transformer(bare).items()}


def load_expert_file(path: Path | str, cfg: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str,
                     fp8_base: bool = False, part: str = wf.HIGH):
    """One Wan 2.2 expert from a single file (or shards), frozen, in eval mode, on ``device``.

    ``fp8_base``: the job trains on an fp8 base, so fp8-scaled block Linears stay fp8 (:class:`Fp8Linear`) as
    stored; the rest is held in ``dtype`` (diffusers' fp32 modules — norms, time embedder, RoPE — in fp32).
    """
    from diffusers import WanTransformer3DModel

    h = wf.read_header(path)
    rep = wf.identify(path, h)
    if rep.kind != "expert":
        raise SingleFileError(f"{wf.FILE_KEY[part]}: {Path(path).name} is {rep.description}; expected {wf.PART_LABEL[part]}")
    model = _empty(lambda: WanTransformer3DModel.from_config(_config(cfg)))
    key_map = expert_key_map(h, rep.layout, rep.facts["prefix"])
    modules = dict(model.named_modules())

    def keep_fp8(mod: str) -> bool:
        return fp8_base and mod.startswith("blocks.") and fp8_eligible(modules.get(mod))

    stream_into(model, h, key_map, device=device, dtype_of=_keep_fp32(model._keep_in_fp32_modules, dtype),
                fp8_module=keep_fp8, label=wf.PART_LABEL[part])
    return _finish(model, device)


def load_vae_file(path: Path | str, cfg: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str):
    """The Wan VAE from ComfyUI's ``wan_2.1_vae.safetensors`` / the release's ``Wan2.1_VAE.pth`` (original keys)
    or a diffusers-keyed file."""
    from diffusers import AutoencoderKLWan

    h = wf.read_header(path)
    rep = wf.identify(path, h)
    if rep.kind != "vae":
        raise SingleFileError(f"{wf.FILE_KEY[wf.VAE]}: {Path(path).name} is {rep.description}; expected {wf.PART_LABEL[wf.VAE]}")
    model = _empty(lambda: AutoencoderKLWan.from_config(_config(cfg)))
    prefix = rep.facts["prefix"]  # weight_files.vae_prefix: the same decision identify made
    stripped = {k: k[len(prefix):] for k in h.tensors if k.startswith(prefix)}
    if rep.layout == "wan":
        inner = keymaps.wan_to_diffusers_vae(stripped.values(), model.state_dict().keys(), model.config)
        key_map = {k: inner[s] for k, s in stripped.items()}
    else:
        key_map = stripped
    stream_into(model, h, key_map, device=device, dtype_of=lambda n: dtype, label=wf.PART_LABEL[wf.VAE])
    return _finish(model, device)


def load_text_encoder_file(path: Path | str, cfg: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str,
                           fp8_base: bool = False):
    """UMT5-XXL from ComfyUI's ``umt5_xxl_{fp16,fp8_e4m3fn_scaled}.safetensors`` (transformers names) or the
    original release's ``models_t5_umt5-xxl-enc-bf16.pth`` (Wan's own names).

    ``fp8_base`` (the job's ``quantization.text_encoder = "fp8"``): an fp8-scaled file's Linears stay fp8 as
    stored (weight-only :class:`Fp8Linear`, as ``quant.quantize_text_encoder`` would make them).
    """
    from transformers import UMT5Config, UMT5EncoderModel

    h = wf.read_header(path)
    rep = wf.identify(path, h)
    if rep.kind != "text_encoder":
        raise SingleFileError(f"{wf.FILE_KEY[wf.TEXT_ENCODER]}: {Path(path).name} is {rep.description}; expected "
                              f"{wf.PART_LABEL[wf.TEXT_ENCODER]}")
    config = UMT5Config.from_dict(_config(cfg))
    model = _empty(lambda: UMT5EncoderModel(config))
    if rep.layout == "wan":
        key_map = keymaps.wan_t5_to_transformers(h.tensors)
    else:
        key_map = keymaps.te_to_transformers(h.tensors, rep.facts["prefix"])
    keep = model._keep_in_fp32_modules if dtype == torch.float16 else None
    modules = dict(model.named_modules())
    stream_into(model, h, key_map, device=device, dtype_of=_keep_fp32(list(keep or []), dtype),
                fp8_module=lambda mod: fp8_base and fp8_eligible(modules.get(mod)), fp8_compute=False,
                label=wf.PART_LABEL[wf.TEXT_ENCODER])
    return _finish(model, device)


# ---------------------------------------------------------------- writing files in users' layouts
def _fp8_scaled(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (t.detach().abs().amax().float() / 448.0).clamp(min=1e-12)
    return (t.float() / scale).clamp(-448.0, 448.0).to(E4M3), scale.reshape(())


def expert_file_tensors(state: Mapping[str, torch.Tensor], *, layout: str = "comfyui",
                        precision: str = "bf16") -> dict[str, torch.Tensor]:
    """A diffusers expert state dict → the tensors of a single file in ``layout`` and ``precision``.

    fp8_scaled is ComfyUI's: block Linear weights e4m3 + a per-tensor ``.scale_weight``, a ``scaled_fp8``
    marker, everything else bf16.
    """
    if layout not in LAYOUTS or precision not in PRECISIONS:
        raise ValueError(f"layout must be one of {LAYOUTS}, precision one of {PRECISIONS}")
    prefix = COMFY_PREFIX if layout == "comfyui" else ""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        name = k if layout == "diffusers" else keymaps.diffusers_to_wan_transformer(k, prefix)
        v = v.detach()
        if precision == "fp8_scaled" and layout != "diffusers" and name.startswith(prefix + "blocks.") \
                and name.endswith(_FP8_BLOCK_LINEAR) and v.dim() == 2:
            q, scale = _fp8_scaled(v)
            out[name] = q.contiguous()
            out[name.removesuffix(".weight") + ".scale_weight"] = scale
            continue
        dt = _DT.get(precision, torch.bfloat16)
        out[name] = (v.to(dt) if v.is_floating_point() else v).contiguous()
    if precision == "fp8_scaled":
        out[prefix + "scaled_fp8"] = torch.zeros(0, dtype=E4M3)
    return out


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path | str, metadata: dict[str, str] | None = None,
                      max_shard_bytes: int | None = None) -> Path:
    """One file, or the original release's shards + ``*.safetensors.index.json`` (returns the index then)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.cpu() for k, v in tensors.items()}
    if not max_shard_bytes:
        save_file(tensors, str(path), metadata=metadata)
        return path
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in tensors.items():
        n = v.numel() * v.element_size()
        if shards[-1] and size + n > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    stem = path.name.removesuffix(".safetensors")
    weight_map = {}
    for i, s in enumerate(shards, 1):
        name = f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(s, str(path.parent / name), metadata=metadata)
        weight_map.update(dict.fromkeys(s, name))
    import json

    index = path.parent / f"{stem}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": metadata or {}, "weight_map": weight_map}, indent=2))
    return index


def save_expert_file(state: Mapping[str, torch.Tensor], path: Path | str, *, layout: str = "comfyui",
                     precision: str = "bf16", expert: str | None = None, max_shard_bytes: int | None = None) -> Path:
    """Write an expert as ComfyUI / the original release / diffusers would (tests, the demo, GPU trials).

    ``expert`` (high_noise/low_noise) is recorded in the metadata, which is how a swapped pair is caught.
    """
    meta = {wf.METADATA_EXPERT: expert} if expert else None
    return write_safetensors(expert_file_tensors(state, layout=layout, precision=precision), path, meta, max_shard_bytes)


def save_vae_file(state: Mapping[str, torch.Tensor], cfg: dict[str, Any], path: Path | str, *,
                  layout: str = "wan", precision: str = "bf16") -> Path:
    """The VAE with original Wan keys (ComfyUI's wan_2.1_vae.safetensors layout) or diffusers keys."""
    dt = _DT[precision]
    out = {(keymaps.diffusers_to_wan_vae(k, cfg) if layout == "wan" else k): (v.detach().to(dt) if v.is_floating_point() else v)
           for k, v in state.items()}
    return write_safetensors(out, path)


def save_text_encoder_file(state: Mapping[str, torch.Tensor], path: Path | str, *, precision: str = "bf16") -> Path:
    """UMT5 as ComfyUI stores it (transformers names, one embedding; fp8_scaled = Linear weights e4m3 + scale)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight
        v = v.detach()
        if precision == "fp8_scaled" and k.endswith(".weight") and v.dim() == 2 and k != "shared.weight" \
                and "relative_attention_bias" not in k:
            q, scale = _fp8_scaled(v)
            out[k], out[k.removesuffix(".weight") + ".scale_weight"] = q.contiguous(), scale
            continue
        out[k] = v.to(_DT.get(precision, torch.bfloat16)).contiguous()
    if precision == "fp8_scaled":
        out["scaled_fp8"] = torch.zeros(0, dtype=E4M3)
    return write_safetensors(out, path)


# ---------------------------------------------------------------- streaming writer (full-size files, GPU trials)
_ST_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", E4M3: "F8_E4M3"}


def write_safetensors_streaming(path: Path | str, specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
                                make: Callable[[str], torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file written one tensor at a time: the header from ``specs`` first, then ``make(name)``'s
    bytes in order — a 14B expert is written with one tensor in memory (safetensors' own writer needs them all)."""
    import json
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, dtype, shape in specs:
        n = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": _ST_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name, dtype, shape in specs:
            t = make(name)
            if t.dtype != dtype or tuple(t.shape) != tuple(shape):
                raise ValueError(f"{name}: made {t.dtype} {tuple(t.shape)}, header says {dtype} {shape}")
            f.write(memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))  # no copy
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


_Spec = tuple[str, torch.dtype, tuple[int, ...]]


def _random_expert_specs(cfg: dict[str, Any], layout: str, precision: str, prefix: str) -> list[_Spec]:
    """Every tensor of a Wan 2.2 expert as ``layout``/``precision`` names and stores it (fp8: block Linears e4m3
    with a scale each, plus the ``scaled_fp8`` marker), in the order they are written."""
    base = _DT.get(precision, torch.bfloat16)
    shapes_orig = wf.expected_transformer_shapes(cfg)
    rename = keymaps.wan_to_diffusers_transformer(shapes_orig) if layout == "diffusers" else {}
    specs: list[_Spec] = []
    for k, shape in shapes_orig.items():
        if precision == "fp8_scaled" and k.startswith("blocks.") and k.endswith(_FP8_BLOCK_LINEAR):
            specs += [(prefix + k, E4M3, shape), (prefix + k.removesuffix(".weight") + ".scale_weight", torch.float32, ())]
        else:
            specs.append((rename.get(k, prefix + k), base, shape))
    if precision == "fp8_scaled":
        specs.append((prefix + "scaled_fp8", E4M3, (0,)))
    return specs


class _RandomWeights:
    """``make(name)`` for the streaming writer: zeros for biases, ones for norms, N(0, std) weights (fp8: scaled
    so ±4σ is e4m3's ±448) — each drawn from its own name-seeded generator, or with ``fast`` a slice of one pool
    per dtype."""

    def __init__(self, specs: list[_Spec], prefix: str, seed: int, std: float, fast: bool) -> None:
        self.shapes = {n: (d, s) for n, d, s in specs}
        self.prefix, self.seed, self.std, self.fast = prefix, seed, std, fast
        self.fp8_scale = std * 4 / 448.0  # ±4σ maps to e4m3's ±448
        self.pools: dict[torch.dtype, torch.Tensor] = {}

    def pool(self, dtype: torch.dtype, n: int) -> torch.Tensor:
        """The first ``n`` values of ``dtype``'s pool, drawn once at the size of its largest tensor."""
        if dtype not in self.pools or self.pools[dtype].numel() < n:
            size = max(n, max(math.prod(s) for d, s in self.shapes.values() if d == dtype))
            w = torch.randn(size, generator=torch.Generator().manual_seed(self.seed)) * self.std
            self.pools[dtype] = (w / self.fp8_scale).clamp(-448, 448).to(E4M3) if dtype == E4M3 else w.to(dtype)
        return self.pools[dtype][:n]

    def __call__(self, name: str) -> torch.Tensor:
        import zlib

        dtype, shape = self.shapes[name]
        short = name[len(self.prefix):]
        if name.endswith(".scale_weight"):
            return torch.tensor(self.fp8_scale, dtype=torch.float32)
        if short.endswith((".bias", "scaled_fp8")):
            return torch.zeros(shape, dtype=dtype)
        if "norm" in short:
            return torch.ones(shape, dtype=dtype)
        if self.fast:
            return self.pool(dtype, math.prod(shape)).reshape(shape)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
        w = torch.randn(shape, generator=g) * self.std
        if dtype == E4M3:
            return (w / self.fp8_scale).clamp(-448, 448).to(E4M3)
        return w.to(dtype)


def _split_shards(specs: list[_Spec], max_shard_bytes: int) -> list[list[_Spec]]:
    """Consecutive runs of ``specs`` of at most ``max_shard_bytes`` each (a bigger tensor gets a shard of its own)."""
    shards: list[list[_Spec]] = [[]]
    size = 0
    for spec in specs:
        n = math.prod(spec[2]) * torch.empty((), dtype=spec[1]).element_size()
        if shards[-1] and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += n
    return shards


def _write_sharded(path: Path, specs: list[_Spec], make: Callable[[str], torch.Tensor],
                   meta: dict[str, str] | None, max_shard_bytes: int) -> Path:
    """``<stem>-0000i-of-0000n.safetensors`` shards plus the ``<stem>.safetensors.index.json`` that maps each tensor
    to its shard (the diffusers / original-release layout); returns the index."""
    import json

    shards = _split_shards(specs, max_shard_bytes)
    stem = path.name.removesuffix(".safetensors")
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, 1):
        name = f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors_streaming(path.parent / name, shard, make, meta)
        weight_map.update(dict.fromkeys((n for n, _d, _s in shard), name))
    index = path.parent / f"{stem}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": meta or {}, "weight_map": weight_map}, indent=2))
    return index


def write_random_expert(path: Path | str, cfg: dict[str, Any] | None = None, *, layout: str = "comfyui",
                        precision: str = "fp8_scaled", seed: int = 0, expert: str | None = None,
                        std: float = 0.02, fast: bool = False, max_shard_bytes: int | None = None) -> Path:
    """A random-weight Wan 2.2 expert (default: the full-size A14B config) written as ComfyUI, the original release
    or a diffusers folder (``layout="diffusers"``, bf16/fp16/fp32) would store it, streamed tensor by tensor — the
    files a GPU trial or bench/single_file_load.py loads to time the real loaders.

    ``fast``: every tensor's values are a slice of one random pool per dtype instead of a draw of their own, so
    a 14B expert is written at disk speed (load timing does not depend on the values).  ``max_shard_bytes``
    writes shards + ``*.safetensors.index.json`` (what diffusers folders and the original release hold) and
    returns the index.
    """
    if layout not in LAYOUTS or precision not in PRECISIONS or (layout == "diffusers" and precision == "fp8_scaled"):
        raise ValueError(f"layout must be one of {LAYOUTS}, precision one of {PRECISIONS} (no fp8_scaled diffusers)")
    cfg = cfg or wf.config_for(wf.HIGH)
    prefix = COMFY_PREFIX if layout == "comfyui" else ""
    specs = _random_expert_specs(cfg, layout, precision, prefix)
    make = _RandomWeights(specs, prefix, seed, std, fast)
    meta = {wf.METADATA_EXPERT: expert} if expert else None
    path = Path(path)
    if not max_shard_bytes:
        return write_safetensors_streaming(path, specs, make, meta)
    return _write_sharded(path, specs, make, meta, max_shard_bytes)
