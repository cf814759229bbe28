"""The guide's troubleshooting as checks that run before a GPU is touched (SPEC §4).

Every finding names the exact key (``datasets[0].num_frames``), says what is wrong in plain words and
says the fix.  Errors refuse the job; warnings carry the guide's reasoning; info lines explain where we
behave differently from ai-toolkit.  Data checks read the files (folders, captions, ctrl_img) through
``engine.data.scan``, which is torch-free, so ``wanlora validate`` stays fast on a laptop.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from wanlora.engine.config.accelerator import AcceleratorError, accelerator_files, is_set
from wanlora.engine.config.findings import Finding, JobError
from wanlora.engine.config.frames import nearest_valid_frames, valid_frames, valid_frames_at_most
from wanlora.engine.config.io import parse_toml, read_toml
from wanlora.engine.config.machine import Machine, machine_findings, skip_requested
from wanlora.engine.config.presets import Resolved, recipe_meta, resolve
from wanlora.engine.config.refusals import unload_with_dop
from wanlora.engine.config.schema import EXPERTS, DatasetSection, Job, expert_plan
from wanlora.engine.estimate import MEASURED_TOKENS, card_gib, format_ladder, oom_ladder, peak_vram

if TYPE_CHECKING:
    from wanlora.engine.data.scan import FolderReport

TRIGGER = "[trigger]"
SOURCE_FPS = 16.0  # Wan 2.2 generates at 16 fps
SQUEEZE_LIMIT = 1.5
MAX_STEPS = 4000
LEVEL_ORDER = {"error": 0, "warning": 1, "info": 2}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def _names(paths: list[Path], limit: int = 3) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


NAMES_SHOWN = 20  # unreadable files named in one finding; the rest are in `wanlora scan --json`


def _unreadable_list(items: list[tuple[Path, str | None]], folder: str) -> str:
    """Every unreadable file by name with its reason, up to NAMES_SHOWN, then where to find the rest."""
    shown = "; ".join(f"{p.name}: {why}" for p, why in items[:NAMES_SHOWN])
    rest = len(items) - NAMES_SHOWN
    return shown + (f"; and {rest} more (`wanlora scan --json {folder}` lists them all)" if rest > 0 else "")


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or Path(path).expanduser().exists()


# ---- checks on the job alone ------------------------------------------------------------------------


def _check_structure(job: Job) -> list[Finding]:
    out: list[Finding] = []
    if not job.datasets:
        out.append(Finding("error", "datasets", "the job has no dataset",
                           'add a [[datasets]] table with folder = "/path/to/clips"'))
    elif all(d.is_regularization for d in job.datasets):
        out.append(Finding("warning", "datasets", "every dataset is a regularization dataset, so there is nothing new to learn",
                           "set is_regularization = false on your main dataset"))
    if job.datasets and all(d.is_eval for d in job.datasets):
        out.append(Finding("error", "datasets", "every dataset has is_eval = true, so nothing is left to train on",
                           "set is_eval = false on your training dataset (eval datasets are only measured)"))
    for i, d in enumerate(job.datasets):
        if d.is_eval and (d.is_regularization or d.eval_fraction):
            out.append(Finding("warning", f"datasets[{i}].is_eval",
                               "an is_eval dataset is only measured, never trained on; is_regularization and "
                               "eval_fraction do nothing here", "remove is_regularization / eval_fraction from it"))
    ms = job.multistage
    if not ms.high_noise and not ms.low_noise:
        out.append(Finding("error", "multistage.high_noise.train", "neither the high-noise nor the low-noise expert is trained",
                           "set high_noise = true and/or low_noise = true (both for most LoRAs)"))
    if ms.high_noise and ms.low_noise and ms.switch_every >= job.training.steps:
        out.append(Finding("warning", "multistage.switch_every",
                           f"switch_every = {ms.switch_every} is not below steps = {job.training.steps}, so the second expert never trains",
                           f"use switch_every = {max(1, min(10, job.training.steps // 2))} (at most half of steps; "
                           f"10 is usual, 20-50 with low_vram/offloading) or raise steps above {ms.switch_every}"))
    t = job.training
    if t.lr_warmup_steps >= t.steps:
        out.append(Finding("warning", "training.lr_warmup_steps",
                           f"lr_warmup_steps = {t.lr_warmup_steps} is not below steps = {t.steps}, so the learning rate "
                           f"never reaches learning_rate = {t.learning_rate:g}",
                           f"use lr_warmup_steps = {min(100, t.steps // 10)} (a few percent of steps; 0 = no warm-up)"))
    return out


def _check_frames(job: Job) -> list[Finding]:
    out: list[Finding] = []
    for i, d in enumerate(job.datasets):
        if not valid_frames(d.num_frames):
            near = " or ".join(str(n) for n in nearest_valid_frames(d.num_frames))
            out.append(Finding("error", f"datasets[{i}].num_frames",
                               f"num_frames = {d.num_frames} is not 1 or 4n+1 (Wan's VAE packs 4 frames per latent frame after the first)",
                               f"use num_frames = {near} (valid: 1, 9, 13, 17, 21, 33, 41, 81 ...)"))
    sf = job.sample.num_frames
    if not valid_frames(sf):
        near = " or ".join(str(n) for n in nearest_valid_frames(sf))
        out.append(Finding("warning", "sample.num_frames", f"num_frames = {sf} is not 4n+1; the pipeline would round it",
                           f"use num_frames = {near}"))
    return out


def _check_sample(job: Job, check_files: bool) -> list[Finding]:
    out: list[Finding] = []
    s = job.sample
    level = "error" if s.enabled else "warning"
    why = "" if s.enabled else " (sampling is off now, but sample-now or a later `wanlora sample` would fail)"
    if s.enabled and not s.prompts:
        out.append(Finding("warning", "sample.prompts", "sampling is on but there are no [[sample.prompts]]",
                           "add prompts with a ctrl_img each, or set sample.enabled = false"))
    if check_files and is_set(s.accelerator_lora):
        try:
            accelerator_files(s.accelerator_lora)
        except AcceleratorError as e:
            out.append(Finding("error", "sample.accelerator_lora", str(e),
                               "download the step-distilled LoRA pair and point the key at it, or remove the key"))
    for i, p in enumerate(s.prompts):
        key = f"sample.prompts[{i}].ctrl_img"
        if not p.ctrl_img.strip():
            out.append(Finding(level, key,
                               "this I2V sample prompt has no ctrl_img; Wan I2V sampling needs a first frame and "
                               f"crashes with 'tensor a (36) must match tensor b (16)'{why}",
                               'add ctrl_img = "/path/to/first_frame.png" (prompt and ctrl_img always come as a pair)'))
        elif check_files:
            problem = _image_problem(p.ctrl_img)
            if problem:
                out.append(Finding(level, key, f"{p.ctrl_img}: {problem}{why}",
                                   "point ctrl_img at an existing .png/.jpg/.webp image (an absolute path)"))
    return out


def _image_problem(path: str) -> str | None:
    p = Path(path).expanduser()
    if not p.exists():
        return "file not found"
    if not p.is_file():
        return "not a file"
    try:
        from PIL import Image

        with Image.open(p) as im:
            im.verify()
    except OSError as e:
        return f"cannot be read ({e})" if isinstance(e, PermissionError) else "not an image PIL can open"
    except Exception:
        return "not an image PIL can open"
    return None


def _check_text_encoder(job: Job) -> list[Finding]:
    t = job.training
    out: list[Finding] = []
    if (refused := unload_with_dop(job)) is not None:
        out.append(refused)
    if t.cache_text_embeddings and (t.dop.enabled or any(d.caption_dropout > 0 for d in job.datasets)):
        what = " and ".join(x for x, on in (("caption dropout", any(d.caption_dropout > 0 for d in job.datasets)),
                                             ("DOP", t.dop.enabled)) if on)
        out.append(Finding("info", "training.cache_text_embeddings",
                           f"cache_text_embeddings works with {what} here (the empty prompt and the preservation-class "
                           "prompts are cached too); ai-toolkit would refuse this", ""))
    for i, d in enumerate(job.datasets):
        if d.cache_latents and d.num_frames > 1:
            out.append(Finding("info", f"datasets[{i}].cache_latents",
                               "cache_latents works with video here (ai-toolkit fails with 'caching latents is not supported "
                               "for multi-frame datasets'): latents are cached per clip and bucket", ""))
    return out


def _check_dop(job: Job) -> list[Finding]:
    """DOP needs a trigger word and a class word; otherwise it preserves the very prompt being trained."""
    dop = job.training.dop
    if not dop.enabled:
        return []
    out: list[Finding] = []
    if not job.job.trigger_word.strip():
        out.append(Finding("error", "training.dop.enabled",
                           "DOP is on but job.trigger_word is empty: the preservation prompt would be the training caption "
                           "itself, so DOP would pull the LoRA back to the base model on the very prompts it trains "
                           "(ai-toolkit refuses this too)",
                           'set job.trigger_word = "yourtoken" (captions lacking it get it prepended), '
                           "or set training.dop.enabled = false"))
    if not dop.preservation_class.strip():
        out.append(Finding("error", "training.dop.preservation_class",
                           "DOP is on but preservation_class is empty: there is no word to put in the trigger's place",
                           'set preservation_class = "person" (or "scene", "landscape" ...)'))
    elif job.job.trigger_word.strip() and dop.preservation_class.strip() == job.job.trigger_word.strip():
        out.append(Finding("warning", "training.dop.preservation_class",
                           f"preservation_class is the trigger word itself ({dop.preservation_class!r}), so every "
                           "preservation prompt equals its training caption and DOP cancels what the LoRA learns",
                           'use the class of the subject, e.g. preservation_class = "person"'))
    return out


def _check_experts(job: Job) -> list[Finding]:
    """Per-expert settings on an expert that does not train are ignored: say so."""
    out: list[Finding] = []
    for e in EXPERTS:
        ex = getattr(job.multistage, e)
        if not ex.train and ex.overrides():
            keys = ", ".join(sorted(ex.overrides()))
            out.append(Finding("warning", f"multistage.{e}.train",
                               f"multistage.{e} sets {keys} but the {e.replace('_', '-')} expert is not trained, so they are ignored",
                               f"set multistage.{e}.train = true, or remove those keys"))
    return out


def _check_model(job: Job, check_files: bool) -> list[Finding]:
    out: list[Finding] = []
    m, q = job.model, job.quantization
    if (m.low_vram or m.layer_offloading) and job.multistage.switch_every < 10 and len(job.multistage.trained()) == 2:
        why = "low_vram" if m.low_vram else "layer_offloading"
        out.append(Finding("warning", "multistage.switch_every",
                           f"switch_every = {job.multistage.switch_every} with {why}: every switch swaps 14B weights between CPU and GPU, "
                           "which makes training extremely slow",
                           "use switch_every = 10-50"))
    if q.recovery_adapter and q.transformer == "none":
        out.append(Finding("warning", "quantization.recovery_adapter",
                           "a recovery adapter only applies to a quantised base; with transformer = \"none\" it is ignored",
                           'set transformer = "nf4" or clear recovery_adapter'))
    if check_files:
        name = m.name_or_path.strip()
        if _looks_local(name):
            p = Path(name).expanduser()
            if not p.is_dir():
                out.append(Finding("error", "model.name_or_path", f"local model folder {name} does not exist",
                                   "give a diffusers folder with model_index.json, or a hub id like Wan-AI/Wan2.2-I2V-A14B-Diffusers"))
            elif not (p / "model_index.json").exists():
                out.append(Finding("error", "model.name_or_path", f"{name} has no model_index.json, so it is not a diffusers model folder",
                                   "point at the folder that holds model_index.json, transformer/ and transformer_2/"))
        elif not HUB_ID.match(name):
            out.append(Finding("error", "model.name_or_path", f"{name!r} is neither a local folder nor a hub id",
                               "use org/name[@revision], e.g. Wan-AI/Wan2.2-I2V-A14B-Diffusers, or an absolute path"))
        else:
            out += _check_offline_cache(job, name)
        out += _check_part_files(job)
        ra = q.recovery_adapter.strip()
        if ra and _looks_local(ra) and not Path(ra).expanduser().is_file():
            out.append(Finding("error", "quantization.recovery_adapter", f"recovery adapter file {ra} does not exist",
                               "give the .safetensors file's path, or clear recovery_adapter"))
    return out


def _check_offline_cache(job: Job, hub_id: str) -> list[Finding]:
    """With ``HF_HUB_OFFLINE`` set the trainer can only read the Hugging Face cache: a hub id whose parts are not
    there would be accepted now and fail at its first step (the daemon's intake runs this check too)."""
    from wanlora.engine.model import pull
    from wanlora.engine.model import weight_files as wf

    if not pull.hub_offline():
        return []
    parts = pull.needed_parts(job)
    if not parts:  # every part is a model.*_file: nothing comes from the hub
        return []
    repo, _, rev = hub_id.partition("@")
    subs = [wf.SUBFOLDER[p] for p in parts]
    gaps = pull.snapshot_gaps(repo, rev or None, subs)
    if not gaps:
        return []
    r = f" --revision {rev}" if rev else ""
    what = "is not in the Hugging Face cache" if "model_index.json" in gaps else f"lacks {', '.join(gaps)} in the cache"
    return [Finding("error", "model.name_or_path",
                    f"HF_HUB_OFFLINE is set and {hub_id} {what} ({pull.hub_cache_dir()}), so the trainer could not "
                    "load it",
                    f"download it first, with network access: `hf download {repo}{r} "
                    + " ".join(f"--include '{g}'" for g in ["model_index.json", *(f"{s}/*" for s in subs)])
                    + "` (into this $HF_HOME), or unset HF_HUB_OFFLINE; or train from files already on disk "
                    "(`wanlora model find`; `wanlora model pull --job JOB.toml` fetches ComfyUI's single files)")]


def _check_part_files(job: Job) -> list[Finding]:
    """Single-file parts (model.*_file): read only their safetensors headers (torch-free) — wrong model, LoRA
    given as a base, T2V expert, swapped experts — before any GPU is touched."""
    from wanlora.engine.model import weight_files as wf

    m = job.model
    files = {p: Path(str(getattr(m, f"{p}_file")).strip()).expanduser()
             for p in wf.FILE_PARTS if str(getattr(m, f"{p}_file")).strip()}
    if not files:
        return []
    local = Path(m.name_or_path.strip()).expanduser()
    root = local if (local / "model_index.json").is_file() else None
    errors, warnings, reports = wf.check_files(files, root)
    out = [Finding("error", _file_key(e), e.split(": ", 1)[-1], _part_fix(e)) for e in errors]
    out += [Finding("warning", _file_key(w), w.split(": ", 1)[-1], "") for w in warnings]
    fp8 = [p for p, r in reports.items() if p in wf.EXPERTS and r.precision == "fp8_scaled"]
    if fp8 and job.quantization.transformer == "none":
        out.append(Finding("warning", "quantization.transformer",
                           f"{', '.join(wf.FILE_KEY[p] for p in fp8)} is fp8-scaled but quantization.transformer = "
                           '"none": it is widened to bf16 at load (twice the memory, no accuracy gained)',
                           'set quantization.transformer = "fp8" to train on the file\'s fp8 weights as they are'))
    return out


def _file_key(message: str) -> str:
    head = message.split(":", 1)[0]
    return head if head.startswith("model.") else "model"


def _part_fix(message: str) -> str:
    if "swap" in message:
        return "swap the two file paths"
    return "give the right file (`wanlora model find` lists the Wan 2.2 I2V parts on this machine)"


def _check_recipe(job: Job) -> list[Finding]:
    out: list[Finding] = []
    preset = job.job.preset
    if preset in ("motion", "character"):
        why = "mirroring reverses left/right motion" if preset == "motion" else "faces and outfits are asymmetric"
        for i, d in enumerate(job.datasets):
            for axis in ("flip_x", "flip_y"):
                if getattr(d, axis):
                    out.append(Finding("warning", f"datasets[{i}].{axis}", f"{axis} is on for a {preset} LoRA: {why}",
                                       f"set {axis} = false"))
    if not job.job.trigger_word:
        if preset == "character":
            out.append(Finding("warning", "job.trigger_word", "a character LoRA without a trigger word has no on/off switch",
                               'set trigger_word = "frung" (any rare token) and start captions with "[trigger], <class>"'))
        elif preset == "style" and not job.training.dop.enabled:  # with DOP on, _check_dop refuses it outright
            out.append(Finding("info", "job.trigger_word", "a trigger word is recommended for style LoRAs (a clean on/off switch)",
                               'set trigger_word and put [trigger] in the captions'))
    t = job.training
    if t.steps > MAX_STEPS:
        out.append(Finding("warning", "training.steps",
                           f"steps = {t.steps}: the guide finds better data beats going far past 3000-4000 steps (overfitting, days of GPU time)",
                           "use 2000-3000 steps and compare the saved checkpoints"))
    rank = max([expert_plan(job, e).rank for e in job.multistage.trained()] or [job.target.rank])
    if rank >= 32 and any(max(d.resolutions) >= 1024 and d.num_frames >= 81 for d in job.datasets):
        out.append(Finding("warning", "target.rank",
                           f"rank {rank} with a 1024 bucket and 81 frames makes out-of-memory spikes likely",
                           "use rank 16, or drop the 1024 bucket / use 41 frames until the run is stable"))
    return out


def _tier_of(job: Job, vram_gb: float | None) -> int | None:
    if isinstance(job.job.vram_tier, int):
        return job.job.vram_tier
    if vram_gb is not None:
        from wanlora.engine.config.gpu import pick_tier

        return pick_tier(vram_gb)
    return None


def _check_vram(job: Job, vram_gb: float | None) -> list[Finding]:
    out: list[Finding] = []
    tier = _tier_of(job, vram_gb)
    if tier is not None and tier <= 24:
        for i, d in enumerate(job.datasets):
            if max(d.resolutions) >= 1024:
                out.append(Finding("warning", f"datasets[{i}].resolutions",
                                   f"a {max(d.resolutions)} bucket on a {tier} GB GPU: video at 1024² is very demanding and likely runs out of memory",
                                   f"use resolutions = {[r for r in d.resolutions if r < 1024] or [512]}"))
            if d.num_frames >= 81:
                out.append(Finding("warning", f"datasets[{i}].num_frames",
                                   f"{d.num_frames} frames on a {tier} GB GPU will likely run out of memory",
                                   "use num_frames = 41 (or 33/21)"))
    if isinstance(job.job.vram_tier, int) and vram_gb is not None and vram_gb < job.job.vram_tier * 0.9:
        out.append(Finding("warning", "job.vram_tier",
                           f"vram_tier = {job.job.vram_tier} but the GPU has only {vram_gb:.1f} GiB free",
                           'set vram_tier = "auto" or free the GPU'))
    budget = card_gib(tier, vram_gb)
    if budget is None or not job.datasets:
        return out
    est = peak_vram(job, budget)
    if est.beyond_measured:
        out.append(Finding("warning", f"datasets[{max(0, est.dataset)}].resolutions",
                           f"the {est.largest} bucket is {est.largest_tokens} tokens, past the largest measured to train "
                           f"({MEASURED_TOKENS}: 81 frames at 1024², both experts in fp8 on an H200), so "
                           f"≈{est.need_gib:.0f} GiB is a lower bound",
                           "run `wanlora trial` on the job first, or keep buckets at 81 frames × 1024² or below"))
    if est.need_gib > budget:
        ladder = oom_ladder(job, budget)
        key = ladder[0].key if ladder else "job.vram_tier"
        fits = ladder and ladder[-1].need_gib <= budget
        tail = "" if fits else " — even the whole ladder may not fit; use a bigger GPU"
        out.append(Finding("warning", key,
                           f"estimated peak VRAM ≈{est.need_gib:.0f} GiB ({est.worst}) is above the {budget:.0f} GiB "
                           f"available{tail}",
                           ("the guide's OOM ladder, in order: " + format_ladder(ladder)) if ladder
                           else "use a GPU with more memory"))
    return out


# System folders a job must never write into (resolved, so /proc/self and links into them count too).
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
               "/sys", "/usr", "/var", "/snap")


def _is_under(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def default_output_roots() -> list[Path]:
    """Where ``job.output_dir`` may point: WANLORA_HOME and the ``output_roots`` listed in its config.toml."""
    from wanlora.engine.config.paths import configured_output_roots, wanlora_home

    return [wanlora_home(), *configured_output_roots()]


def check_output_dir(value: str, roots: list[Path] | None = None) -> list[Finding]:
    """The output_dir policy: inside the job's folder (relative, no ``..`` escape) or under an allowed root.

    A job writes LoRA files there as the daemon's user, so ``/etc``, ``/``, ``/proc/self`` or an existing
    file are refused, whatever the roots say.
    """
    key = "job.output_dir"
    v = value.strip()
    if not v:
        return []
    roots = default_output_roots() if roots is None else roots
    allowed = [Path(os.path.realpath(Path(r).expanduser())) for r in roots]
    allowed = [r for r in allowed if r != Path("/") and str(r) not in SYSTEM_DIRS]
    where = ", ".join(str(r) for r in allowed) or "(none)"
    fix = ("leave output_dir empty (LoRAs go to the job's own folder), use a folder inside the job folder "
           f"(a relative path such as \"loras\"), or one under {where}; other roots can be allowed with "
           "output_roots = [\"/path\"] in the daemon's config.toml")
    p = Path(v).expanduser()
    if not p.is_absolute():
        norm = os.path.normpath(p)
        if norm == ".." or norm.startswith("../"):
            return [Finding("error", key, f"{v!r} climbs out of the job's folder ('..')", fix)]
        return []
    real = Path(os.path.realpath(p))
    if real.exists() and not real.is_dir():
        return [Finding("error", key, f"{v} is an existing file, not a folder", fix)]
    if any(_is_under(real, r) for r in allowed):
        return []
    if real == Path("/") or any(_is_under(real, Path(s)) for s in SYSTEM_DIRS):
        shown = v if str(real) == v else f"{v} (= {real})"
        return [Finding("error", key, f"{shown} is a system folder; a job must not write there", fix)]
    return [Finding("error", key, f"{v} is outside the folders jobs may write to ({where})", fix)]


# ---- checks that read the data ----------------------------------------------------------------------


def _check_data(job: Job, check_files: bool) -> tuple[list[Finding], dict[int, FolderReport]]:
    """Folder, clip and caption checks; returns the findings and the scan reports by dataset index."""
    out: list[Finding] = []
    reports: dict[int, FolderReport] = {}
    for i, d in enumerate(job.datasets):
        key = f"datasets[{i}].folder"
        if not d.folder.strip():
            out.append(Finding("error", key, "no folder is set", 'set folder = "/path/to/clips" (an absolute path)'))
            continue
        if not check_files:
            continue
        if not Path(d.folder).expanduser().is_absolute():
            out.append(Finding("warning", key, f"{d.folder} is a relative path; the daemon resolves it from its own folder",
                               "use an absolute path"))
        from wanlora.engine.data.scan import ScanError, scan_folder

        try:
            rep = scan_folder(d.folder, d.caption_ext)
        except ScanError as e:
            msg, _, fix = str(e).partition("; ")
            out.append(Finding("error", key, msg, fix or "check the path"))
            continue
        except Exception as e:  # a bug in scanning must not hide the other findings
            out.append(Finding("error", key, f"scanning {d.folder} failed ({type(e).__name__}: {e})",
                               "run `wanlora scan` on the folder; report this if it persists"))
            continue
        reports[i] = rep
        usable = rep.usable
        bad = rep.unreadable
        if rep.skipped:
            out.append(Finding("warning", key, f"{len(rep.skipped)} entr{'y is' if len(rep.skipped) == 1 else 'ies are'} "
                               f"not regular files and were not read: {_unreadable_list(rep.skipped, d.folder)}",
                               "remove them or replace them with real files"))
        if not usable:
            what = (f"{len(bad)} unreadable file(s): {_unreadable_list([(c.path, c.error) for c in bad], d.folder)}"
                    if bad else "no clips or images")
            out.append(Finding("error", key, f"{d.folder} has no usable clip or image ({what})",
                               "add .mp4/.mov/.mkv/.webm/.avi clips or .png/.jpg/.jpeg/.webp images"))
            continue
        if bad:
            reasons = _unreadable_list([(c.path, c.error) for c in bad], d.folder)
            out.append(Finding("warning", key, f"{len(bad)} file(s) cannot be read and will be skipped: {reasons}",
                               "re-encode them (e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4) or remove them"))
        no_cap = rep.missing_captions
        if no_cap and not d.default_caption.strip():
            out.append(Finding("warning", f"datasets[{i}].default_caption",
                               f"{len(no_cap)} of {len(usable)} files have no .{d.caption_ext} caption ({_names([c.path for c in no_cap])}) "
                               "and default_caption is empty, so they train with an empty prompt",
                               f"write a .{d.caption_ext} caption beside each clip or set default_caption"))
        out.extend(_check_speed(i, d, rep))
    out.extend(_check_counts(job, reports))
    return out, reports


def _check_counts(job: Job, reports: dict[int, FolderReport]) -> list[Finding]:
    main = [i for i, d in enumerate(job.datasets) if not d.is_regularization and not d.is_eval and i in reports]
    if not main:
        return []
    n = sum(len(reports[i].usable) for i in main)
    meta = recipe_meta(job.job.preset)
    lo = int(meta.get("clips_min", 10))
    if n >= lo:
        return []
    advice = meta.get("clip_advice", "10-30 clips with the thing you want to teach")
    return [Finding("warning", f"datasets[{main[0]}].folder",
                    f"only {n} usable clip(s)/image(s); fewer than {lo} rarely gives a LoRA that generalises",
                    f"add more: {advice}")]


def _check_speed(i: int, d: DatasetSection, rep: FolderReport) -> list[Finding]:
    """Even sampling squeezes long clips (motion plays too fast, ai-toolkit #421); fps needs long enough clips."""
    if d.num_frames <= 1:
        return []
    fast, slow, short = [], [], []
    for c in rep.videos:
        if c.duration_s <= 0:
            continue
        natural = c.duration_s * SOURCE_FPS  # frames the clip has at Wan's 16 fps
        ratio = natural / d.num_frames
        if d.frame_sampling == "even":
            if ratio > SQUEEZE_LIMIT:
                fast.append((c, ratio))
            elif ratio < 1 / SQUEEZE_LIMIT:
                slow.append((c, ratio))
        elif natural < d.num_frames:
            short.append(c)
    out: list[Finding] = []
    key = f"datasets[{i}].frame_sampling"
    secs = d.num_frames / SOURCE_FPS
    if fast:
        c, r = max(fast, key=lambda x: x[1])
        out.append(Finding("warning", key,
                           f"{len(fast)} clip(s) are squeezed more than {SQUEEZE_LIMIT}x into {d.num_frames} frames (worst: {c.path.name}, "
                           f"{c.duration_s:.1f} s → plays {r:.1f}x too fast); the learned motion will be too fast (ai-toolkit #421)",
                           f'set frame_sampling = "fps" ({d.num_frames} consecutive frames at 16 fps) or trim the clips to about {secs:.1f} s'))
    if slow:
        c, r = min(slow, key=lambda x: x[1])
        out.append(Finding("warning", key,
                           f"{len(slow)} clip(s) are stretched to {d.num_frames} frames (worst: {c.path.name}, {c.duration_s:.1f} s → plays "
                           f"{1 / r:.1f}x too slow); frames repeat and the motion slows down",
                           f"use longer clips (about {secs:.1f} s) or lower num_frames"))
    if short:
        longest = max(int(c.duration_s * SOURCE_FPS) for c in short)
        near = valid_frames_at_most(longest)
        out.append(Finding("warning", key,
                           f'{len(short)} clip(s) are shorter than {d.num_frames} frames at 16 fps ({_names([c.path for c in short])})',
                           f'lower num_frames to {near} or use frame_sampling = "even"'))
    return out


def _check_captions(job: Job, reports: dict[int, FolderReport]) -> list[Finding]:
    """[trigger] without a trigger word; per-clip captions with unload_text_encoder."""
    from wanlora.engine.data.captions import trigger_rule

    out: list[Finding] = []
    places: list[str] = []
    for i, d in enumerate(job.datasets):
        if TRIGGER in d.default_caption:
            places.append(f"datasets[{i}].default_caption")
        rep = reports.get(i)
        if rep is not None:
            hits = [c.path.with_suffix("." + d.caption_ext) for c in rep.usable if c.caption and TRIGGER in c.caption]
            if hits:
                places.append(f"{len(hits)} caption file(s) in {d.folder} ({_names(hits)})")
    for i, p in enumerate(job.sample.prompts):
        if TRIGGER in p.prompt:
            places.append(f"sample.prompts[{i}].prompt")
    if places and not job.job.trigger_word.strip():
        out.append(Finding("error", "job.trigger_word",
                           f"[trigger] is used in {', '.join(places)}, but "
                           f"{trigger_rule(job.job.trigger_word, job.job.inject_trigger)}",
                           'set trigger_word = "yourtoken" in [job] (or remove [trigger] from those texts)'))
    out.extend(_check_trigger_captions(job, reports))
    if job.training.unload_text_encoder:
        with_caps = [(i, rep) for i, rep in reports.items()
                     if any(c.caption for c in rep.usable)]
        if with_caps:
            i, rep = with_caps[0]
            n = sum(1 for c in rep.usable if c.caption)
            out.append(Finding("error", "training.unload_text_encoder",
                               f"unload_text_encoder encodes only the trigger word, but datasets[{i}] has {n} per-clip caption(s) "
                               "that would be ignored silently",
                               "set unload_text_encoder = false (cache_text_embeddings = true saves the same VRAM and keeps captions)"))
    return out


def _check_trigger_captions(job: Job, reports: dict[int, FolderReport]) -> list[Finding]:
    """Which captions get the trigger prepended, and whether a DOP preservation prompt would equal its caption."""
    from wanlora.engine.data.captions import has_trigger, sample_preservation_prompt, training_caption

    word = job.job.trigger_word.strip()
    if not word:
        return []
    out: list[Finding] = []
    dop = job.training.dop
    for i, d in enumerate(job.datasets):
        rep = reports.get(i)
        if rep is None or d.is_regularization:
            continue
        raws = [(c.path, c.caption if c.caption is not None else d.default_caption.strip()) for c in rep.usable]
        lacking = [p for p, raw in raws if not has_trigger(training_caption(raw, word, inject=False), word)]
        if lacking and job.job.inject_trigger:
            out.append(Finding("info", "job.inject_trigger",
                               f"{len(lacking)} of {len(raws)} caption(s) in datasets[{i}] lack the trigger {word!r} "
                               f"({_names(lacking)}): it is prepended to them (as ai-toolkit does)",
                               "set job.inject_trigger = false to train those captions as written"))
        if not dop.enabled:
            continue
        if lacking and not job.job.inject_trigger:
            out.append(Finding("warning", "job.inject_trigger",
                               f"{len(lacking)} caption(s) in datasets[{i}] lack the trigger {word!r} and inject_trigger = false "
                               f"({_names(lacking)}): they train without the trigger, so DOP's preservation prompt for them "
                               "is their own caption plus the class word and DOP pulls them back to the base model",
                               "set job.inject_trigger = true, or put [trigger] in those captions"))
        same = [] if dop.preservation_class.strip() == word else [
                p for p, raw in raws
                if sample_preservation_prompt(raw, word, dop.preservation_class, inject=job.job.inject_trigger)
                == training_caption(raw, word, inject=job.job.inject_trigger)]
        if same:
            out.append(Finding("warning", "training.dop.preservation_class",
                               f"for {len(same)} caption(s) in datasets[{i}] ({_names(same)}) the DOP preservation prompt "
                               "equals the training caption, so DOP would cancel what the LoRA learns on them",
                               "use a class word different from the trigger and make sure the captions contain the trigger"))
    return out


# ---- entry points -----------------------------------------------------------------------------------


def validate_job(job: Job, *, check_files: bool = True, vram_gb: float | None = None,
                 output_roots: list[Path] | None = None) -> list[Finding]:
    """Every SPEC §4 check on a schema-valid job; ``vram_gb`` = free GiB on the GPU(s), else the tier's size.

    With ``check_files`` the dataset folders, captions, ctrl_img and local model paths are read.
    ``output_roots``: where job.output_dir may point (default: WANLORA_HOME + config.toml output_roots).
    """
    out: list[Finding] = check_output_dir(job.job.output_dir, output_roots)
    out += _check_structure(job)
    out += _check_frames(job)
    out += _check_sample(job, check_files)
    out += _check_text_encoder(job)
    out += _check_dop(job)
    out += _check_experts(job)
    out += _check_model(job, check_files)
    out += _check_recipe(job)
    out += _check_vram(job, vram_gb)
    data, reports = _check_data(job, check_files)
    out += data
    out += _check_captions(job, reports)
    return sort_findings(out)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: LEVEL_ORDER[f.level])


_KEY_PART = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")


def _drop_key(data: dict, dotted: str) -> bool:
    """Remove ``datasets[0].num_frames``-style keys from a parsed job file; False when it is not there."""
    parts: list[str | int] = []
    for piece in dotted.split("."):
        m = _KEY_PART.fullmatch(piece)
        if not m:
            return False
        parts.append(m.group(1))
        parts += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    cur: object = data
    for p in parts[:-1]:
        try:
            cur = cur[p]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return False
    try:
        del cur[parts[-1]]  # type: ignore[attr-defined]
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _beyond_schema_errors(user: dict, schema: list[Finding], source: str, vram_gb: float | None) -> list[Finding]:
    """The other findings of a file with schema errors: one typo must not hide everything else.

    The offending keys are set aside (so their preset/default value applies) and the rest is checked as usual;
    findings about the set-aside keys are dropped (the schema error already speaks for them).
    """
    import copy

    trial = copy.deepcopy(user)
    bad = {f.key for f in schema}
    for _ in range(4):
        if not all(_drop_key(trial, k) for k in bad if k != source):
            return []
        try:
            res = resolve(trial, source=source, detected_vram_gb=vram_gb)
        except JobError as e:
            new = {f.key for f in e.findings} - bad
            if not new:
                return []
            bad |= new
            continue
        found = res.findings + validate_job(res.job, check_files=True, vram_gb=res.detected_vram_gb)
        return [f for f in found if f.key not in bad and f.level != "info"]
    return []


def check_file(path: Path | str, *, vram_gb: float | None = None, output_roots: list[Path] | None = None,
               text: str | None = None, machine: Machine | bool | None = None) -> tuple[Resolved | None, list[Finding]]:
    """Parse + schema + presets + every check of a job file; never raises for a bad job.

    Returns ``(Resolved, findings)``, or ``(None, findings)`` when the file cannot become a job at all.
    ``text``: the file's content, already read safely by the caller (the daemon's intake); ``path`` then only names it.
    ``machine``: None/True = also check that *this* machine can run it (``engine.config.machine``; skipped when
    ``WANLORA_VALIDATE_ANYWHERE`` is set), a :class:`Machine` = check against that one, False = skip.
    """
    try:
        user = parse_toml(text, str(path)) if text is not None else read_toml(Path(path))
    except JobError as e:
        return None, e.findings
    try:
        resolved = resolve(user, source=str(path), detected_vram_gb=vram_gb)
    except JobError as e:
        return None, e.findings + _beyond_schema_errors(user, e.findings, str(path), vram_gb)
    vram = resolved.detected_vram_gb
    found = resolved.findings + validate_job(resolved.job, check_files=True, vram_gb=vram, output_roots=output_roots)
    if machine is not False and not (machine is None and skip_requested()):
        found += machine_findings(resolved.job, machine if isinstance(machine, Machine) else None)
    return resolved, sort_findings(found)
