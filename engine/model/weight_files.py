"""What a weights file is, read from its safetensors header only (torch-free, cheap, no tensor bytes).

Users bring single-file parts — ComfyUI's ``wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors``, the original
Wan 2.2 release's sharded ``high_noise_model/``, ``umt5_xxl_fp16.safetensors``, ``wan_2.1_vae.safetensors``.
Before a GPU is touched we say what each file *is* (a Wan expert of which kind, a VAE, a text encoder, a
LoRA …), in which key layout and precision, and whether it fits the part it was given for: a T2V expert
(16 input channels; I2V has 36), a Wan 2.1 I2V expert (CLIP branch), a 5B model or a LoRA given as a base
is refused with what it is and what was expected.  ``wanlora validate`` (torch-free) and the loader both
use this module.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanlora.engine.config.experts import EXPERTS, HIGH, LOW

TEXT_ENCODER, VAE, TOKENIZER = "text_encoder", "vae", "tokenizer"
FILE_PARTS = (HIGH, LOW, TEXT_ENCODER, VAE)
FILE_KEY = {p: f"model.{p}_file" for p in FILE_PARTS}
SUBFOLDER = {HIGH: "transformer", LOW: "transformer_2", TEXT_ENCODER: "text_encoder", VAE: "vae",
             TOKENIZER: "tokenizer"}
PART_LABEL = {HIGH: "the high-noise expert", LOW: "the low-noise expert", TEXT_ENCODER: "the UMT5-XXL text encoder",
              VAE: "the Wan 2.1 VAE", TOKENIZER: "the UMT5 tokenizer"}
METADATA_EXPERT = "wanlora.expert"  # written by our own single-file writer; read to catch swapped files

# safetensors dtype names → bytes per element (and our precision words)
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
                "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8}
_PRECISION = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "F8_E4M3": "fp8", "F8_E5M2": "fp8_e5m2", "F64": "fp64"}
# tensors an fp8-scaled file carries beside the weights (ComfyUI's scaled_fp8 and the newer comfy_quant form)
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
FP8_EXTRA_SUFFIXES = SCALE_SUFFIXES + (".scale_input", ".input_scale", ".comfy_quant")
FP8_MARKERS = ("scaled_fp8",)
_LORA_KEY = re.compile(r"(lora_[AB]|lora_up|lora_down|lora\.(up|down)|\.alpha$|lokr_|hada_|\.diff_b$)")
# what users' expert files put before the key names: ComfyUI's checkpoint layout, its bare diffusion model, other
# exporters' ``model.``, or nothing (the original release, diffusers); the longest that fits wins
TRANSFORMER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "")
TE_PREFIXES = ("text_encoders.umt5xxl.transformer.", "umt5xxl.transformer.", "transformer.", "")
VAE_PREFIXES = ("first_stage_model.", "vae.", "")


class WeightFileError(Exception):
    """A weights file cannot be read or is not what it was given for; the message names the file and the fix."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = _DTYPE_BYTES.get(self.dtype, 1)
        for s in self.shape:
            n *= s
        return n


@dataclass
class Header:
    """The tensor names, dtypes and shapes of one safetensors file or a set of shards (no tensor data)."""

    path: Path
    files: list[Path]
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    where: dict[str, Path] = field(default_factory=dict)  # tensor → shard file

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_STORAGE = {"FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
            "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8",
            "BoolStorage": "BOOL", "Float8_e4m3fnStorage": "F8_E4M3", "Float8_e5m2Storage": "F8_E5M2"}


def _read_pickle(path: Path) -> dict[str, TensorInfo]:
    """Names and shapes in a torch zip checkpoint (the original release's ``Wan2.1_VAE.pth``, the UMT5 ``.pth``)
    without torch: its ``data.pkl`` is unpickled with stubs for the few torch names a state dict uses — nothing
    else is allowed, so no code from the file runs."""
    import collections
    import pickle
    import zipfile

    def rebuild(storage: Any, _offset: Any, size: Any, *_rest: Any) -> TensorInfo:
        return TensorInfo(storage, tuple(int(x) for x in size))

    class Stubs(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if module == "torch._utils" and name == "_rebuild_tensor_v2":
                return rebuild
            if module == "torch._utils" and name == "_rebuild_parameter":
                return lambda data, *_: data
            if module == "torch" and name in _STORAGE:
                return _STORAGE[name]
            raise WeightFileError(f"{path} holds {module}.{name}, not a plain state dict; give a .safetensors file")

        def persistent_load(self, pid: Any) -> Any:
            return pid[1]  # ('storage', <dtype word from find_class>, key, location, numel)

    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
            if name is None:
                raise WeightFileError(f"{path} is not a torch checkpoint (no data.pkl)")
            obj = Stubs(zf.open(name)).load()
    except zipfile.BadZipFile:
        raise WeightFileError(f"{path} is a legacy (non-zip) torch file or not a checkpoint; "
                              "give a .safetensors file") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise WeightFileError(f"{path} cannot be read as a state dict ({e})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, TensorInfo) for v in obj.values()):
        raise WeightFileError(f"{path} is not a plain state dict of tensors; give a .safetensors file")
    return {str(k): v for k, v in obj.items()}


def _read_one(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    if path.suffix in PICKLE_SUFFIXES:
        return _read_pickle(path), {}
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise WeightFileError(f"{path} is not a safetensors file (too short: {path.stat().st_size} bytes)")
            (n,) = struct.unpack("<Q", raw)
            size = path.stat().st_size
            if n <= 1 or n > min(size - 8, 200 * 2**20):
                raise WeightFileError(f"{path} is not a safetensors file (bad header length); give a "
                                      ".safetensors file (ComfyUI's, or the original release's shards)")
            head = json.loads(f.read(n))
    except OSError as e:
        raise WeightFileError(f"cannot read {path} ({e.strerror or e}); check the path and its permissions") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WeightFileError(f"{path} is not a safetensors file (its header is not JSON)") from None
    meta = head.pop("__metadata__", None) or {}
    tensors = {}
    end = 0
    for k, v in head.items():
        try:
            tensors[k] = TensorInfo(str(v["dtype"]), tuple(int(s) for s in v["shape"]))
            end = max(end, int(v["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise WeightFileError(f"{path}: malformed safetensors entry {k!r}") from None
    if 8 + n + end > size:
        raise WeightFileError(f"{path} is truncated ({size} bytes, its header says {8 + n + end}); "
                              "the download did not finish: download it again (`wanlora model pull` resumes)")
    return tensors, {str(k): str(v) for k, v in meta.items()}


def shard_files(path: Path) -> list[Path]:
    """The safetensors files behind ``path``: the file itself, an ``*.index.json``'s shards, or a folder's."""
    path = Path(path).expanduser()
    if path.is_dir():
        idx = sorted(path.glob("*.safetensors.index.json"))
        if idx:
            return shard_files(idx[0])
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise WeightFileError(f"{path} holds no .safetensors file; give the file itself or a folder of shards")
        return files
    if path.name.endswith(".json"):
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise WeightFileError(f"{path} is not a safetensors index (no weight_map: {e})") from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (path.parent / n).is_file()]
        if missing:
            raise WeightFileError(f"{path} lists shards that are missing: {', '.join(missing[:3])}"
                                  f"{' …' if len(missing) > 3 else ''}; download them (`wanlora model pull`)")
        return [path.parent / n for n in names]
    if not path.exists():
        raise WeightFileError(f"{path} does not exist; check the path (`wanlora model find` lists what is on this machine)")
    return [path]


def read_header(path: Path | str) -> Header:
    """Header of a safetensors file or a set of shards: names, dtypes, shapes, metadata — no tensor bytes."""
    path = Path(path).expanduser()
    files = shard_files(path)
    tensors: dict[str, TensorInfo] = {}
    where: dict[str, Path] = {}
    meta: dict[str, str] = {}
    for f in files:
        t, m = _read_one(f)
        tensors.update(t)
        where.update(dict.fromkeys(t, f))
        meta = meta or m
    return Header(path=path, files=files, tensors=tensors, metadata=meta, where=where)


def file_bytes(path: Path | str) -> int:
    """Bytes on disk of a part's file(s)."""
    return sum(f.stat().st_size for f in shard_files(Path(path)))


# ---------------------------------------------------------------- configs (the project's own copy)
def bundled_config_dir() -> Path:
    """Our copy of the Wan 2.2 I2V A14B configs (model_index, both experts, VAE, UMT5, scheduler): no download."""
    return Path(__file__).resolve().parent / "configs" / "wan22_i2v_a14b"


def config_for(part: str, root: Path | None = None) -> dict[str, Any]:
    """``<root>/<subfolder>/config.json`` when ``root`` has one (a local diffusers folder), else our bundled copy."""
    name = "scheduler_config.json" if part == "scheduler" else "config.json"
    sub = SUBFOLDER.get(part, part)
    for base in ([Path(root)] if root is not None else []) + [bundled_config_dir()]:
        p = base / sub / name
        if p.is_file():
            return json.loads(p.read_text())
    raise WeightFileError(f"no config for {part}")  # pragma: no cover - the bundled copy has every part


# ---------------------------------------------------------------- expected shapes (pure, from the config)
def expected_transformer_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Wan 2.2 expert in the original (ComfyUI) key layout, with its shape, from a diffusers config."""
    dim = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
    p = tuple(int(x) for x in cfg["patch_size"])
    ffn, text, freq = int(cfg["ffn_dim"]), int(cfg["text_dim"]), int(cfg["freq_dim"])
    out = int(cfg["out_channels"]) * p[0] * p[1] * p[2]
    s: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (dim, int(cfg["in_channels"]), *p), "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, text), "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim), "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, freq), "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim), "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim), "time_projection.1.bias": (6 * dim,),
        "head.head.weight": (out, dim), "head.head.bias": (out,), "head.modulation": (1, 2, dim),
    }
    for i in range(int(cfg["num_layers"])):
        b = f"blocks.{i}."
        s[b + "modulation"] = (1, 6, dim)
        for a in ("self_attn", "cross_attn"):
            for lin in "qkvo":
                s[f"{b}{a}.{lin}.weight"] = (dim, dim)
                s[f"{b}{a}.{lin}.bias"] = (dim,)
            s[f"{b}{a}.norm_q.weight"] = (dim,)
            s[f"{b}{a}.norm_k.weight"] = (dim,)
        if cfg.get("cross_attn_norm", True):
            s[b + "norm3.weight"] = (dim,)
            s[b + "norm3.bias"] = (dim,)
        s[b + "ffn.0.weight"] = (ffn, dim)
        s[b + "ffn.0.bias"] = (ffn,)
        s[b + "ffn.2.weight"] = (dim, ffn)
        s[b + "ffn.2.bias"] = (dim,)
    return s


# ---------------------------------------------------------------- what a file is
@dataclass
class FileReport:
    """What a weights file is (``kind``), its layout, precision and size, and problems for the part it was given for."""

    path: Path
    kind: str  # expert | vae | text_encoder | lora | unknown
    layout: str = ""  # comfyui | wan | diffusers | hf
    precision: str = ""  # bf16 | fp16 | fp32 | fp8_scaled | fp8
    nbytes: int = 0
    description: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    expert_hint: str | None = None  # HIGH/LOW from metadata or the file name
    hint_source: str = ""  # "metadata" | "file name" | ""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _prefix(keys: set[str], probe: str, prefixes: tuple[str, ...]) -> str | None:
    for p in prefixes:
        if p + probe in keys:
            return p
    return None


def transformer_prefix(keys: set[str] | dict[str, Any]) -> str | None:
    """What an expert file puts before its key names (one of :data:`TRANSFORMER_PREFIXES`), or None if it is not an
    expert.  The one decision: :func:`identify` (so ``model find`` and ``validate``) and the loader
    (``single_file.expert_key_map``) both take the prefix from here, so a file they accept is a file that loads."""
    return _prefix(set(keys), "patch_embedding.weight", TRANSFORMER_PREFIXES)


def vae_prefix(keys: set[str] | dict[str, Any]) -> str | None:
    """What a VAE file puts before its key names (original Wan or diffusers names), or None if it is not a VAE."""
    keys = set(keys)
    p = _prefix(keys, "decoder.middle.0.residual.0.gamma", VAE_PREFIXES)
    return p if p is not None else _prefix(keys, "decoder.mid_block.resnets.0.norm1.gamma", VAE_PREFIXES)


def strip_prefix(tensors: dict[str, TensorInfo], prefix: str) -> dict[str, TensorInfo]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)} if prefix else dict(tensors)


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _weight_precision(t: dict[str, TensorInfo], probe: str) -> str:
    info = t.get(probe)
    if info is None:
        return ""
    prec = _PRECISION.get(info.dtype, info.dtype.lower())
    if prec == "fp8":
        base = probe.removesuffix(".weight")
        return "fp8_scaled" if any(base + s in t for s in SCALE_SUFFIXES) else "fp8"
    return prec


def _expert_hint(path: Path, meta: dict[str, str]) -> tuple[str | None, str]:
    m = meta.get(METADATA_EXPERT, "").strip().lower().replace("-", "_")
    if m in EXPERTS:
        return m, "metadata"
    name = path.name.lower().replace("-", "_")
    if path.is_dir() or path.name.endswith(".json"):
        name = (path if path.is_dir() else path.parent).name.lower().replace("-", "_") + "/" + name
    high = bool(re.search(r"high_?noise|(^|[_/.])high([_/.]|$)", name))
    low = bool(re.search(r"low_?noise|(^|[_/.])low([_/.]|$)", name))
    if high != low:
        return (HIGH if high else LOW), "file name"
    return None, ""


def identify(path: Path | str, header: Header | None = None) -> FileReport:
    """Read the header of ``path`` and say what it is: a Wan expert, VAE, UMT5 text encoder, a LoRA, or unknown."""
    h = header or read_header(path)
    keys = set(h.tensors)
    rep = FileReport(path=h.path, kind="unknown", nbytes=h.nbytes)
    rep.expert_hint, rep.hint_source = _expert_hint(h.path, h.metadata)
    lora = [k for k in keys if _LORA_KEY.search(k)]
    if lora and len(lora) >= len(keys) // 2:
        rep.kind = "lora"
        ranks = sorted({i.shape[0] for k, i in h.tensors.items() if re.search(r"lora_(A|down)", k) and i.shape})
        rep.facts = {"tensors": len(keys), "ranks": ranks}
        rep.description = (f"a LoRA ({len(lora)} adapter tensors{', rank ' + '/'.join(map(str, ranks[:3])) if ranks else ''}"
                           f", {_gb(h.nbytes)}), not a base model")
        return rep
    # transformer expert: original/ComfyUI keys (maybe prefixed) or diffusers keys
    p = transformer_prefix(keys)
    if p is not None:
        t = strip_prefix(h.tensors, p)
        diff = "blocks.0.attn1.to_q.weight" in t or "condition_embedder.time_proj.weight" in t
        pe = t["patch_embedding.weight"].shape
        blocks = {int(m.group(1)) for k in t if (m := re.match(r"blocks\.(\d+)\.", k))}
        q = "blocks.0.attn1.to_q.weight" if diff else "blocks.0.self_attn.q.weight"
        ffn = t.get("blocks.0.ffn.net.0.proj.weight" if diff else "blocks.0.ffn.0.weight")
        text = t.get("condition_embedder.text_embedder.linear_1.weight" if diff else "text_embedding.0.weight")
        rep.kind = "expert"
        rep.layout = "diffusers" if diff else ("comfyui" if p else "wan")
        rep.precision = _weight_precision(t, q)
        rep.facts = {"prefix": p, "dim": pe[0], "in_channels": pe[1] if len(pe) > 1 else 0,
                     "num_layers": (max(blocks) + 1) if blocks else 0,
                     "ffn_dim": ffn.shape[0] if ffn else 0, "text_dim": text.shape[1] if text and len(text.shape) > 1 else 0,
                     "image_branch": any(".k_img." in k or k.startswith(("img_emb.", "condition_embedder.image_embedder."))
                                         for k in t),
                     "vace": any(k.startswith("vace_") for k in t)}
        rep.description = (f"a Wan transformer ({_model_kind(rep.facts)}), {_layout_words(rep)}, {rep.precision or '?'}, "
                           f"{rep.facts['num_layers']} blocks, dim {rep.facts['dim']}, "
                           f"{rep.facts['in_channels']} input channels, {_gb(h.nbytes)}")
        return rep
    p = _prefix(keys, "decoder.middle.0.residual.0.gamma", VAE_PREFIXES)
    pd = _prefix(keys, "decoder.mid_block.resnets.0.norm1.gamma", VAE_PREFIXES)
    if p is not None or pd is not None:
        t = strip_prefix(h.tensors, p if p is not None else pd)  # type: ignore[arg-type]
        conv = t.get("conv1.weight" if p is not None else "quant_conv.weight")
        enc = t.get("encoder.conv1.weight" if p is not None else "encoder.conv_in.weight")
        rep.kind = "vae"
        rep.layout = "wan" if p is not None else "diffusers"
        rep.precision = _PRECISION.get(enc.dtype, enc.dtype) if enc else ""
        z = conv.shape[0] // 2 if conv else 0
        rep.facts = {"prefix": vae_prefix(keys), "z_dim": z, "base_dim": enc.shape[0] if enc else 0,
                     "in_channels": enc.shape[1] if enc else 0}
        what = "the Wan 2.1 VAE" if z == 16 else ("the Wan 2.2 VAE (TI2V-5B)" if z == 48 else f"a VAE with {z} latent channels")
        rep.description = f"{what}, {_layout_words(rep)}, {rep.precision}, {_gb(h.nbytes)}"
        return rep
    p = _prefix(keys, "encoder.block.0.layer.0.SelfAttention.q.weight", TE_PREFIXES)
    po = "blocks.0.attn.q.weight" in keys and "token_embedding.weight" in keys
    if p is not None or po:
        t = strip_prefix(h.tensors, p or "")
        if po:
            emb, nl = t.get("token_embedding.weight"), {int(m.group(1)) for k in t if (m := re.match(r"blocks\.(\d+)\.", k))}
            per_layer = "blocks.1.pos_embedding.embedding.weight" in t
            q = "blocks.0.attn.q.weight"
        else:
            emb = t.get("shared.weight") or t.get("encoder.embed_tokens.weight")
            nl = {int(m.group(1)) for k in t if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
            per_layer = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in t
            q = "encoder.block.0.layer.0.SelfAttention.q.weight"
        rep.kind = "text_encoder"
        rep.layout = "wan" if po else "hf"
        rep.precision = _weight_precision(t, q)
        rep.facts = {"prefix": p or "", "vocab": emb.shape[0] if emb else 0, "d_model": emb.shape[1] if emb else 0,
                     "num_layers": (max(nl) + 1) if nl else 0, "umt5": per_layer,
                     "decoder": any(k.startswith("decoder.") for k in t)}
        fam = "UMT5" if per_layer else "T5"
        rep.description = (f"a {fam} text encoder ({rep.facts['num_layers']} layers, d_model {rep.facts['d_model']}, "
                           f"vocab {rep.facts['vocab']}), {_layout_words(rep)}, {rep.precision}, {_gb(h.nbytes)}")
        return rep
    sample = ", ".join(sorted(keys)[:3])
    rep.description = f"not a Wan 2.2 part ({len(keys)} tensors, e.g. {sample or 'none'})"
    return rep


def _model_kind(f: dict[str, Any]) -> str:
    if f.get("vace"):
        return "Wan VACE"
    if f.get("image_branch"):
        return "Wan 2.1 I2V (CLIP image branch)"
    cin, dim = f.get("in_channels"), f.get("dim")
    if cin == 48 or dim == 3072:
        return "Wan 2.2 TI2V-5B"
    if dim == 1536:
        return "Wan 1.3B"
    if cin == 16:
        return "T2V"
    if cin == 36:
        return "I2V"
    return f"{cin} input channels"


def _layout_words(rep: FileReport) -> str:
    return {"comfyui": f"ComfyUI keys ({rep.facts.get('prefix', '')}…)", "wan": "original Wan keys",
            "diffusers": "diffusers keys", "hf": "transformers keys"}.get(rep.layout, rep.layout)


def check_part(part: str, path: Path | str, root: Path | None = None, header: Header | None = None) -> FileReport:
    """:func:`identify` plus the errors/warnings of using ``path`` as ``part`` of a Wan 2.2 I2V A14B model.

    Expected shapes come from ``root``'s configs when it is a local diffusers folder, else our bundled copy.
    """
    key = FILE_KEY[part]
    rep = identify(path, header)
    want = PART_LABEL[part]
    if rep.kind == "lora":
        rep.errors.append(f"{key}: {rep.path.name} is {rep.description}; expected {want}. "
                          "A LoRA is trained on top of a base; give the base model file here")
        return rep
    expected_kind = "expert" if part in EXPERTS else part
    if rep.kind != expected_kind:
        rep.errors.append(f"{key}: {rep.path.name} is {rep.description}; expected {want}")
        return rep
    if part in EXPERTS:
        _check_expert(part, rep, header or read_header(path), config_for(part, root))
    elif part == VAE:
        _check_vae(rep, config_for(VAE, root))
    else:
        _check_te(rep, config_for(TEXT_ENCODER, root))
    return rep


def _check_expert(part: str, rep: FileReport, h: Header, cfg: dict[str, Any]) -> None:
    key, f = FILE_KEY[part], rep.facts
    want_in, want_layers = int(cfg["in_channels"]), int(cfg["num_layers"])
    want_dim = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
    what = f"{rep.path.name} is {rep.description}"
    if f["image_branch"] or f["vace"]:
        rep.errors.append(f"{key}: {what}; expected {PART_LABEL[part]} of Wan 2.2 I2V A14B (no CLIP/VACE branch)")
        return
    if f["in_channels"] != want_in:
        extra = (" T2V experts take 16 channels (noise only); I2V takes 36 (16 noise + 4 mask + 16 first-frame latents)"
                 if f["in_channels"] == 16 else "")
        rep.errors.append(f"{key}: {what}; expected {PART_LABEL[part]} of Wan 2.2 I2V A14B with {want_in} input "
                          f"channels.{extra} Use the i2v file (e.g. wan2.2_i2v_{part}_14B_fp16.safetensors)")
        return
    if (f["dim"], f["num_layers"]) != (want_dim, want_layers):
        rep.errors.append(f"{key}: {what}; expected {want_layers} blocks of dim {want_dim} (Wan 2.2 I2V A14B)")
        return
    if rep.layout == "diffusers":
        return  # names checked at load (the converter is the identity)
    expected = expected_transformer_shapes(cfg)
    t = strip_prefix(h.tensors, f["prefix"])
    missing = [k for k in expected if k not in t]
    wrong = [f"{k} {list(t[k].shape)} (expected {list(s)})" for k, s in expected.items() if k in t and t[k].shape != s]
    extra = [k for k in t if k not in expected and not k.endswith(FP8_EXTRA_SUFFIXES) and k not in FP8_MARKERS]
    if missing:
        rep.errors.append(f"{key}: {rep.path.name} lacks {len(missing)} tensors of the expert (e.g. {missing[0]}); "
                          "the file is incomplete or another model: download it again")
    if wrong:
        rep.errors.append(f"{key}: {rep.path.name} has tensors of the wrong shape: {'; '.join(wrong[:3])}")
    if extra:
        rep.warnings.append(f"{key}: {rep.path.name} has {len(extra)} tensors a Wan 2.2 expert does not use "
                            f"(e.g. {extra[0]}); they are ignored")
    scales = [k for k in t if k.endswith(SCALE_SUFFIXES)]
    bad_scale = [k for k in scales if t[k].shape not in ((), (1,))]
    if bad_scale:
        rep.warnings.append(f"{key}: {rep.path.name} has per-channel fp8 scales (e.g. {bad_scale[0]} "
                            f"{list(t[bad_scale[0]].shape)}); they are dequantised at load and re-quantised per tensor")


def _check_vae(rep: FileReport, cfg: dict[str, Any]) -> None:
    f = rep.facts
    if (f["z_dim"], f["base_dim"]) != (int(cfg["z_dim"]), int(cfg["base_dim"])):
        rep.errors.append(f"{FILE_KEY[VAE]}: {rep.path.name} is {rep.description}; expected the Wan 2.1 VAE "
                          f"({cfg['z_dim']} latent channels, base {cfg['base_dim']}) that Wan 2.2 I2V A14B uses "
                          "(ComfyUI: wan_2.1_vae.safetensors, not wan2.2_vae)")


def _check_te(rep: FileReport, cfg: dict[str, Any]) -> None:
    f = rep.facts
    want = (int(cfg["vocab_size"]), int(cfg["d_model"]), int(cfg["num_layers"]))
    if not f["umt5"] or (f["vocab"], f["d_model"], f["num_layers"]) != want:
        rep.errors.append(f"{FILE_KEY[TEXT_ENCODER]}: {rep.path.name} is {rep.description}; expected UMT5-XXL "
                          f"(vocab {want[0]}, d_model {want[1]}, {want[2]} layers; ComfyUI: umt5_xxl_fp16 or "
                          "umt5_xxl_fp8_e4m3fn_scaled.safetensors)")


def check_files(files: dict[str, Path], root: Path | None = None) -> tuple[list[str], list[str], dict[str, FileReport]]:
    """Check every given part file, and the pair: the same file twice, or high and low swapped.

    Returns (errors, warnings, reports).  Swaps are caught by our metadata, else by the file names; when neither
    says which expert a file is, a warning says it cannot be verified.
    """
    errors: list[str] = []
    warnings: list[str] = []
    reports: dict[str, FileReport] = {}
    for part, path in files.items():
        try:
            rep = check_part(part, path, root)
        except WeightFileError as e:
            errors.append(f"{FILE_KEY[part]}: {e}")
            continue
        reports[part] = rep
        errors += rep.errors
        warnings += rep.warnings
    experts = {p: r for p, r in reports.items() if p in EXPERTS and r.ok}
    if HIGH in files and LOW in files and Path(files[HIGH]).expanduser().resolve() == Path(files[LOW]).expanduser().resolve():
        errors.append(f"model.high_noise_file and model.low_noise_file are the same file ({files[HIGH]}); "
                      "Wan 2.2 has two different experts: give both files")
        return errors, warnings, reports
    for part, rep in experts.items():
        other = LOW if part == HIGH else HIGH
        if rep.expert_hint == other:
            renamed = " (or, if the name is wrong, rename the file)" if rep.hint_source == "file name" else ""
            errors.append(f"{FILE_KEY[part]}: {rep.path.name} is {PART_LABEL[other]} by its {rep.hint_source}, given as "
                          f"{PART_LABEL[part]}; swap model.high_noise_file and model.low_noise_file{renamed}")
        elif rep.expert_hint is None:
            warnings.append(f"{FILE_KEY[part]}: neither the metadata nor the name of {rep.path.name} says which "
                            f"expert it is, so a high/low swap cannot be verified; make sure it is {PART_LABEL[part]}")
    return errors, warnings, reports


def source_notes(model: Any) -> list[str]:
    """Where each part and the boundary come from, for ``wanlora show`` (reads headers only)."""
    files = {p: str(getattr(model, f"{p}_file", "") or "").strip() for p in FILE_PARTS}
    name = str(model.name_or_path).strip()
    local = Path(name).expanduser()
    notes = []
    for p in FILE_PARTS:
        if files[p]:
            try:
                r = identify(files[p])
                what = f"{_layout_words(r)}, {r.precision}"
            except WeightFileError as e:
                what = f"unreadable: {e}"
            notes.append(f"{PART_LABEL[p]}: {FILE_KEY[p]} = {files[p]} ({what})")
        else:
            notes.append(f"{PART_LABEL[p]}: {name}/{SUBFOLDER[p]}")
    if model.boundary_ratio == "auto":
        index = local / "model_index.json"
        src, value = f"{bundled_config_dir().name} configs bundled with wanlora", 0.9
        if index.is_file():
            try:
                value = float(json.loads(index.read_text()).get("boundary_ratio", 0.9))
                src = str(index)
            except (OSError, ValueError, TypeError):
                pass
        elif not all(files.values()):
            src = f"{name}/model_index.json (0.9 for Wan 2.2 I2V A14B)"
        notes.append(f"model.boundary_ratio = auto → {value} from {src}: t ≥ {value * 1000:g} trains the "
                     "high-noise expert; set model.boundary_ratio to override")
    else:
        notes.append(f"model.boundary_ratio = {model.boundary_ratio} (set by the job; Wan 2.2 I2V A14B's own is 0.9)")
    return notes
