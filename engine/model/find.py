"""``wanlora model find``: the Wan 2.2 I2V parts already on this machine, and the job-file lines to use them.

Looks in the usual places — ComfyUI's ``models/`` folders (``diffusion_models``/``unet``, ``text_encoders``/
``clip``, ``vae``) under /workspace and ~, the Hugging Face cache (``$HF_HOME``), and any folders given — and
reads only safetensors headers (torch-free), so a disk of 14B files is listed in a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from wanlora.engine.model import weight_files as wf

SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", "venv", ".cache_wanlora", ".wanlora_cache", "loras",
             "outputs", "output", "input", "custom_nodes"}
MAX_DEPTH = 6
_PREC_ORDER = {"bf16": 0, "fp16": 1, "fp32": 2, "fp8_scaled": 3, "fp8": 4}


@dataclass
class Candidate:
    """One file (or shard set) that is, or looks like, a Wan 2.2 I2V part."""

    path: Path
    part: str | None  # HIGH / LOW / text_encoder / vae; None = an expert of unknown side
    report: wf.FileReport
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems


@dataclass
class Found:
    candidates: list[Candidate]
    diffusers_folders: list[Path]
    searched: list[Path]

    def for_part(self, part: str) -> list[Candidate]:
        """Usable candidates for ``part``, best first (full precision before fp8; an expert of unknown side last)."""
        out = [c for c in self.candidates if c.usable and (c.part == part or (c.part is None and part in wf.EXPERTS))]
        return sorted(out, key=lambda c: (c.part is None, _PREC_ORDER.get(c.report.precision, 9), str(c.path)))


COMFY_MODEL_DIRS = ("diffusion_models", "unet", "text_encoders", "clip", "vae", "checkpoints")


def default_roots() -> list[Path]:
    """The usual places, not whole disks: ``$HF_HOME/hub`` and ComfyUI ``models/`` folders under /workspace and ~
    (``<base>/ComfyUI/models``, ``<base>/*/ComfyUI/models``, ``<base>/models``)."""
    hf = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache/huggingface") / "hub")
    out = [hf] if hf.is_dir() else []
    for base in (Path("/workspace"), Path.home()):
        if not base.is_dir():
            continue
        for models in [base / "ComfyUI" / "models", *sorted(base.glob("*/ComfyUI/models")), base / "models"]:
            if models.is_dir() and any((models / d).is_dir() for d in COMFY_MODEL_DIRS):
                out += [models / d for d in COMFY_MODEL_DIRS if (models / d).is_dir()]
    return out


def _walk(root: Path, depth: int = 0):
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    names = {e.name for e in entries}
    index = [e for e in entries if e.name.endswith(".safetensors.index.json")]
    if index:  # a shard set (the original release's high_noise_model/): one candidate, not each shard
        yield Path(index[0].path)
    if "model_index.json" in names:  # a diffusers folder: a name_or_path candidate as a whole, not its shards
        yield Path(root)
        return
    for e in entries:
        if e.name.startswith(".") and e.name not in (".cache",):
            continue
        try:
            if e.is_dir(follow_symlinks=True):
                if e.name in SKIP_DIRS or depth >= MAX_DEPTH:
                    continue
                yield from _walk(Path(e.path), depth + 1)
            elif e.name.endswith(".safetensors") and not index:
                yield Path(e.path)
        except OSError:
            continue


def _classify(path: Path, config_root: Path | None = None) -> Candidate | None:
    try:
        rep = wf.identify(path)
    except wf.WeightFileError:
        return None
    if rep.kind not in ("expert", "vae", "text_encoder"):
        return None
    part = rep.expert_hint if rep.kind == "expert" else rep.kind
    try:
        check = wf.check_part(part or wf.HIGH, path, config_root)
    except wf.WeightFileError as e:
        return Candidate(path, part, rep, [str(e)])
    problems = [e.split(": ", 1)[-1] for e in check.errors]
    return Candidate(path, part, rep, problems)


def find_parts(dirs: list[Path] | None = None, config_root: Path | None = None) -> Found:
    """Every Wan part under ``dirs`` (default: :func:`default_roots`), plus diffusers folders with a boundary.

    Shapes are checked against ``config_root``'s configs (a diffusers folder), else Wan 2.2 I2V A14B's.
    """
    roots = [Path(d).expanduser() for d in dirs] if dirs else default_roots()
    seen: set[Path] = set()
    cands: list[Candidate] = []
    folders: list[Path] = []
    for root in roots:
        for p in _walk(root):
            key = p.resolve()
            if key in seen:
                continue
            seen.add(key)
            if p.is_dir():
                try:
                    idx = (p / "model_index.json").read_text()
                except OSError:
                    continue
                if "WanImageToVideoPipeline" in idx and "boundary_ratio" in idx:
                    folders.append(p)
                continue
            c = _classify(p, config_root)
            if c is not None:
                cands.append(c)
    return Found(cands, folders, roots)


def _toml_str(p: Path) -> str:
    return '"' + str(p).replace("\\", "\\\\").replace('"', '\\"') + '"'


def suggestions(found: Found) -> dict[str, str]:
    """Dotted job keys → values that use the best file found for each part (the wizard's "use these")."""
    out: dict[str, str] = {}
    if found.diffusers_folders:
        out["model.name_or_path"] = str(found.diffusers_folders[0])
    fp8 = False
    for part in wf.FILE_PARTS:
        best = found.for_part(part)
        if part in wf.EXPERTS:
            other = wf.LOW if part == wf.HIGH else wf.HIGH
            best = [c for c in best if c.part == part] or [c for c in best if c.part is None and not found.for_part(other)]
        if best:
            out[wf.FILE_KEY[part]] = str(best[0].path)
            fp8 |= part in wf.EXPERTS and best[0].report.precision in ("fp8_scaled", "fp8")
    if fp8:
        out["quantization.transformer"] = "fp8"
    return out


def job_lines(found: Found) -> list[str]:
    """The ``[model]`` lines that use the best file found for each part (fp8 experts add the quantization line)."""
    s = suggestions(found)
    model = [f"{k.split('.', 1)[1]} = {_toml_str(Path(v))}" for k, v in s.items() if k.startswith("model.")]
    if not model:
        return []
    lines = ["[model]", *model]
    if "quantization.transformer" in s:
        lines += ["", "[quantization]", 'transformer = "fp8"   # the fp8-scaled experts are used as the fp8 base']
    return lines


def render(found: Found) -> str:
    """What ``wanlora model find`` prints: per part each file with layout, precision and size, then job lines."""
    if found.searched:
        out = [f"searched: {', '.join(str(r) for r in found.searched)}"]
    else:
        out = ["none of the usual places exist here ($HF_HOME/hub, /workspace/ComfyUI/models, ~/ComfyUI/models, "
               "<dir>/*/ComfyUI/models); name folders to search: wanlora model find DIR …"]
    for part in (*wf.FILE_PARTS, None):
        if part is None:
            rows = [c for c in found.candidates if c.part is None and c.usable]
            title = "Wan experts whose side (high/low noise) is not in the name or metadata"
        else:
            rows = [c for c in found.candidates if c.part == part]
            title = wf.PART_LABEL[part]
        if not rows:
            if part is not None:
                out.append(f"\n{title}: none found")
            continue
        out.append(f"\n{title}:")
        for c in sorted(rows, key=lambda c: (not c.usable, str(c.path))):
            r = c.report
            line = f"  {'✓' if c.usable else '✗'} {c.path}  ({wf._layout_words(r)}, {r.precision}, {wf._gb(r.nbytes)})"
            out.append(line)
            for p in c.problems:
                out.append(f"      not usable: {p}")
    if found.diffusers_folders:
        out.append("\ndiffusers folders (model.name_or_path):")
        out += [f"  ✓ {p}" for p in found.diffusers_folders]
    lines = job_lines(found)
    if lines:
        out += ["", "job-file lines to use them:", *("  " + ln if ln else "" for ln in lines)]
    else:
        out += ["", "nothing usable found; `wanlora model pull` downloads only the parts a job needs"]
    return "\n".join(out) + "\n"
