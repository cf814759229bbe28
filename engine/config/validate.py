"""The guide's troubleshooting as checks that run before a GPU is touched (SPEC §4).

Every finding names the exact key (``datasets[0].num_frames``), says what is wrong in plain words and
says the fix.  Errors refuse the job; warnings carry the guide's reasoning; info lines explain where we
behave differently from ai-toolkit.  Data checks read the files (folders, captions, ctrl_img) through
``engine.data.scan``, which is torch-free, so ``wanlora validate`` stays fast on a laptop.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from wanlora.engine.config.accelerator import AcceleratorError, accelerator_files, is_set
from wanlora.engine.config.findings import Finding, JobError
from wanlora.engine.config.io import read_toml
from wanlora.engine.config.presets import Resolved, recipe_meta, resolve
from wanlora.engine.config.schema import DatasetSection, Job
from wanlora.engine.estimate import format_ladder, oom_ladder, peak_vram

if TYPE_CHECKING:
    from wanlora.engine.data.scan import FolderReport

TRIGGER = "[trigger]"
SOURCE_FPS = 16.0  # Wan 2.2 generates at 16 fps
SQUEEZE_LIMIT = 1.5
MAX_STEPS = 4000
LEVEL_ORDER = {"error": 0, "warning": 1, "info": 2}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def nearest_valid_frames(n: int) -> list[int]:
    """The nearest 1-or-4n+1 frame count(s) to ``n`` (two when ``n`` sits exactly between them)."""
    lower = max(1, ((n - 1) // 4) * 4 + 1)
    upper = lower + 4
    if n - lower == upper - n:
        return [lower, upper]
    return [lower if n - lower < upper - n else upper]


def valid_frames(n: int) -> bool:
    return n == 1 or (n - 1) % 4 == 0


def _names(paths: list[Path], limit: int = 3) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


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
        out.append(Finding("error", "multistage.high_noise", "neither the high-noise nor the low-noise expert is trained",
                           "set high_noise = true and/or low_noise = true (both for most LoRAs)"))
    if ms.high_noise and ms.low_noise and ms.switch_every >= job.training.steps:
        out.append(Finding("warning", "multistage.switch_every",
                           f"switch_every = {ms.switch_every} is not below steps = {job.training.steps}, so the second expert never trains",
                           "use switch_every = 10 (or 20-50 with low_vram/offloading)"))
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
    if t.unload_text_encoder and t.dop.enabled:
        out.append(Finding("error", "training.unload_text_encoder",
                           "unload_text_encoder encodes only the trigger word once, so DOP's class prompts could not be encoded",
                           "set unload_text_encoder = false (use cache_text_embeddings = true to save VRAM instead)"))
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


def _check_model(job: Job, check_files: bool) -> list[Finding]:
    out: list[Finding] = []
    m, q = job.model, job.quantization
    if (m.low_vram or m.layer_offloading) and job.multistage.switch_every < 10 and job.multistage.high_noise and job.multistage.low_noise:
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
        ra = q.recovery_adapter.strip()
        if ra and _looks_local(ra) and not Path(ra).expanduser().is_file():
            out.append(Finding("error", "quantization.recovery_adapter", f"recovery adapter file {ra} does not exist",
                               "give the .safetensors file's path, or clear recovery_adapter"))
    return out


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
        elif preset == "style":
            out.append(Finding("info", "job.trigger_word", "a trigger word is recommended for style LoRAs (a clean on/off switch)",
                               'set trigger_word and put [trigger] in the captions'))
    t = job.training
    if t.steps > MAX_STEPS:
        out.append(Finding("warning", "training.steps",
                           f"steps = {t.steps}: the guide finds better data beats going far past 3000-4000 steps (overfitting, days of GPU time)",
                           "use 2000-3000 steps and compare the saved checkpoints"))
    if job.target.rank >= 32 and any(max(d.resolutions) >= 1024 and d.num_frames >= 81 for d in job.datasets):
        out.append(Finding("warning", "target.rank",
                           f"rank {job.target.rank} with a 1024 bucket and 81 frames makes out-of-memory spikes likely",
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
    budget = vram_gb if vram_gb is not None else (tier * 0.97 if tier else None)
    if budget is None or not job.datasets:
        return out
    est = peak_vram(job)
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
        if not usable:
            what = f"{len(bad)} unreadable file(s): {_names([c.path for c in bad])}" if bad else "no clips or images"
            out.append(Finding("error", key, f"{d.folder} has no usable clip or image ({what})",
                               "add .mp4/.mov/.mkv/.webm/.avi clips or .png/.jpg/.jpeg/.webp images"))
            continue
        if bad:
            reasons = "; ".join(f"{c.path.name}: {c.error}" for c in bad[:3])
            out.append(Finding("warning", key, f"{len(bad)} file(s) cannot be read and will be skipped ({reasons})",
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
        near = max(1, ((longest - 1) // 4) * 4 + 1)
        out.append(Finding("warning", key,
                           f'{len(short)} clip(s) are shorter than {d.num_frames} frames at 16 fps ({_names([c.path for c in short])})',
                           f'lower num_frames to {near} or use frame_sampling = "even"'))
    return out


def _check_captions(job: Job, reports: dict[int, FolderReport]) -> list[Finding]:
    """[trigger] without a trigger word; per-clip captions with unload_text_encoder."""
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
                           f"[trigger] is used in {', '.join(places)} but trigger_word is empty, so the literal text '[trigger]' would be trained",
                           'set trigger_word = "yourtoken" in [job] (or remove [trigger] from those texts)'))
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


# ---- entry points -----------------------------------------------------------------------------------


def validate_job(job: Job, *, check_files: bool = True, vram_gb: float | None = None) -> list[Finding]:
    """Every SPEC §4 check on a schema-valid job; ``vram_gb`` = free GiB on the GPU(s), else the tier's size.

    With ``check_files`` the dataset folders, captions, ctrl_img and local model paths are read.
    """
    out: list[Finding] = []
    out += _check_structure(job)
    out += _check_frames(job)
    out += _check_sample(job, check_files)
    out += _check_text_encoder(job)
    out += _check_model(job, check_files)
    out += _check_recipe(job)
    out += _check_vram(job, vram_gb)
    data, reports = _check_data(job, check_files)
    out += data
    out += _check_captions(job, reports)
    return sort_findings(out)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: LEVEL_ORDER[f.level])


def check_file(path: Path | str, *, vram_gb: float | None = None) -> tuple[Resolved | None, list[Finding]]:
    """Parse + schema + presets + every check of a job file; never raises for a bad job.

    Returns ``(Resolved, findings)``, or ``(None, findings)`` when the file cannot become a job at all.
    """
    try:
        user = read_toml(Path(path))
        resolved = resolve(user, source=str(path), detected_vram_gb=vram_gb)
    except JobError as e:
        return None, e.findings
    vram = resolved.detected_vram_gb
    return resolved, sort_findings(resolved.findings + validate_job(resolved.job, check_files=True, vram_gb=vram))
