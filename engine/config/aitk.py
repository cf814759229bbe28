"""ai-toolkit job configs (yaml or the UI's JSON) → a wanlora job file, for users switching over.

The goal is the same run: a key the ai-toolkit config sets is mapped; a key it leaves out gets the value
ai-toolkit itself would use — its code default, read from ostris/ai-toolkit (``toolkit/config_modules.py``
and the files cited in :data:`AITK_DEFAULTS`), not ours — and a note says so.  Every key is either mapped,
mapped with a note (a value that changes meaning on the way, e.g. its qtype ``uint4|<adapter>`` → ``nf4`` +
``recovery_adapter``), or listed as not imported with the reason — never dropped silently.  Where wanlora
cannot or deliberately does not do what ai-toolkit does (the 0.875 boundary, ``weighted`` timesteps, a
dropped caption trained as the bare trigger), a note names the difference and the key that would get closer.
Key names follow ai-toolkit's ``config/process[0]`` layout (shared/notes/ai-toolkit.md §1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel
from wanlora.engine.config.findings import Finding, JobError
from wanlora.engine.config.schema import PANELS, SamplePrompt, hub_repo_problem, section_model

_MISSING = object()
_CM = "toolkit/config_modules.py"

# (our key, ai-toolkit key, ai-toolkit's value when the key is absent, where ai-toolkit sets it).  Read from
# ostris/ai-toolkit at 27a03a91 (2026-08-21).  Filled in only when the config leaves the ai-toolkit key out.
# (model.compile is left to wanlora: it changes speed, not what is trained.)
AITK_DEFAULTS: tuple[tuple[str, str, Any, str], ...] = (
    ("training.steps", "train.steps", 1000, f"{_CM} TrainConfig"),
    ("training.learning_rate", "train.lr", 1e-6, f"{_CM} TrainConfig"),
    ("training.batch_size", "train.batch_size", 1, f"{_CM} TrainConfig"),
    ("training.gradient_accumulation", "train.gradient_accumulation", 1, f"{_CM} TrainConfig"),
    ("training.optimizer", "train.optimizer", "adamw", f"{_CM} TrainConfig"),
    ("training.lr_scheduler", "train.lr_scheduler", "constant", f"{_CM} TrainConfig"),
    ("training.max_grad_norm", "train.max_grad_norm", 1.0, f"{_CM} TrainConfig"),
    ("training.weight_decay", "train.optimizer_params.weight_decay", 1e-2,
     "toolkit/optimizer.py passes optimizer_params to torch AdamW / bitsandbytes AdamW8bit, whose default is 0.01"),
    ("training.gradient_checkpointing", "train.gradient_checkpointing", True, f"{_CM} TrainConfig"),
    ("training.timestep_type", "train.timestep_type", "sigmoid", f"{_CM} TrainConfig (the UI writes linear for Wan I2V)"),
    ("training.timestep_bias", "train.content_or_style", "balanced", f"{_CM} TrainConfig"),
    ("training.cache_text_embeddings", "train.cache_text_embeddings", False, f"{_CM} TrainConfig"),
    ("training.unload_text_encoder", "train.unload_text_encoder", False, f"{_CM} TrainConfig"),
    ("training.ema", "train.ema_config.use_ema", False, f"{_CM} TrainConfig"),
    ("training.ema_decay", "train.ema_config.ema_decay", 0.999, f"{_CM} EMAConfig"),
    ("training.dop.enabled", "train.diff_output_preservation", False, f"{_CM} TrainConfig"),
    ("training.dop.multiplier", "train.diff_output_preservation_multiplier", 1.0, f"{_CM} TrainConfig"),
    ("training.dop.preservation_class", "train.diff_output_preservation_class", "", f"{_CM} TrainConfig"),
    ("advanced.differential_guidance", "train.do_differential_guidance", False, f"{_CM} TrainConfig"),
    ("advanced.differential_guidance_scale", "train.differential_guidance_scale", 3.0, f"{_CM} TrainConfig"),
    ("multistage.switch_every", "train.switch_boundary_every", 1, f"{_CM} TrainConfig"),
    ("multistage.high_noise", "model.model_kwargs.train_high_noise", True,
     "extensions_built_in/diffusion_models/wan22/wan22_14b_model.py"),
    ("multistage.low_noise", "model.model_kwargs.train_low_noise", True,
     "extensions_built_in/diffusion_models/wan22/wan22_14b_model.py"),
    ("model.low_vram", "model.low_vram", False, f"{_CM} ModelConfig"),
    ("model.layer_offloading", "model.layer_offloading", False, f"{_CM} ModelConfig"),
    ("target.rank", "network.linear", 4, f"{_CM} NetworkConfig"),
    ("save.every", "save.save_every", 1000, f"{_CM} SaveConfig"),
    ("save.dtype", "save.dtype", "fp16", f"{_CM} SaveConfig (float16)"),
    ("save.max_keep", "save.max_step_saves_to_keep", 5, f"{_CM} SaveConfig"),
)
DATASET_DEFAULTS: tuple[tuple[str, str, Any, str], ...] = (
    ("caption_ext", "caption_ext", "txt", f"{_CM} DatasetConfig"),
    ("default_caption", "default_caption", "", f"{_CM} DatasetConfig (None)"),
    ("caption_dropout", "caption_dropout_rate", 0.0, f"{_CM} DatasetConfig"),
    ("resolutions", "resolution", [512], f"{_CM} DatasetConfig"),
    ("num_frames", "num_frames", 1, f"{_CM} DatasetConfig"),
    ("frame_sampling", "shrink_video_to_frames", "even", f"{_CM} DatasetConfig (shrink_video_to_frames = true)"),
    ("flip_x", "flip_x", False, f"{_CM} DatasetConfig"),
    ("flip_y", "flip_y", False, f"{_CM} DatasetConfig"),
    ("is_regularization", "is_reg", False, f"{_CM} DatasetConfig"),
    ("weight", "network_weight", 1.0, f"{_CM} DatasetConfig"),
    ("cache_latents", "cache_latents_to_disk", False, f"{_CM} DatasetConfig"),
)
SAMPLE_DEFAULTS: tuple[tuple[str, str, Any, str], ...] = (
    ("sample.every", "sample.sample_every", 100, f"{_CM} SampleConfig"),
    ("sample.width", "sample.width", 512, f"{_CM} SampleConfig"),
    ("sample.height", "sample.height", 512, f"{_CM} SampleConfig"),
    ("sample.num_frames", "sample.num_frames", 1, f"{_CM} SampleConfig"),
    ("sample.fps", "sample.fps", 16, f"{_CM} SampleConfig"),
    ("sample.guidance_scale", "sample.guidance_scale", 7.0, f"{_CM} SampleConfig"),
    ("sample.steps", "sample.sample_steps", 20, f"{_CM} SampleConfig"),
    ("sample.seed", "sample.seed", 0, f"{_CM} SampleConfig"),
    ("sample.walk_seed", "sample.walk_seed", False, f"{_CM} SampleConfig"),
    ("sample.negative_prompt", "sample.neg", "", f"{_CM} SampleConfig"),
    ("sample.sampler", "sample.sampler", "flowmatch",
     "extensions_built_in/diffusion_models/wan22/wan22_14b_model.py samples with its flow-match scheduler whatever "
     f"sample.sampler says ({_CM} SampleConfig default 'ddpm')"),
)


@dataclass
class Conversion:
    """The converted job (only keys the source set), the notes on changed values, and what was not imported."""

    job: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    dropped: list[tuple[str, Any, str]] = field(default_factory=list)  # (ai-toolkit key, value, why)
    source: str = "config.yaml"
    defaults: list[str] = field(default_factory=list)  # keys the config left out → ai-toolkit's own value


class _Section:
    """One ai-toolkit table; ``take`` marks keys as handled so the rest can be reported."""

    def __init__(self, data: Any, prefix: str, conv: Conversion) -> None:
        self.data = data if isinstance(data, dict) else {}
        self.prefix = prefix
        self.conv = conv
        self.used: set[str] = set()

    def take(self, key: str, default: Any = _MISSING) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.data

    def drop(self, key: str, why: str) -> None:
        if key in self.data:
            self.used.add(key)
            self.conv.dropped.append((f"{self.prefix}{key}", self.data[key], why))

    def rest(self, why: str = "no wanlora equivalent") -> None:
        for k, v in self.data.items():
            if k not in self.used:
                self.conv.dropped.append((f"{self.prefix}{k}", v, why))


def _set(job: dict[str, Any], dotted: str, value: Any) -> None:
    if value is _MISSING:
        return
    parts = dotted.split(".")
    cur = job
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


def _quant(qtype: str, what: str, conv: Conversion) -> tuple[str, str]:
    """(our quantisation, recovery adapter) for an ai-toolkit qtype such as ``uint4|org/repo/file``."""
    qtype = str(qtype).strip()
    base, _, adapter = qtype.partition("|")
    base = base.strip().lower()
    if base in ("qfloat8", "float8", "fp8", "qfloat8_e4m3fn", "float8_e4m3fn"):
        return "fp8", adapter.strip()
    if base in ("uint4", "int4", "nf4", "qint4"):
        if adapter:
            conv.notes.append(f"{what}: {qtype!r} (4-bit with ARA) became nf4 + recovery_adapter")
        return "nf4", adapter.strip()
    m = re.match(r"u?int([1-8])$", base)
    if m and int(m.group(1)) < 4 or base in ("nvfp4", "fp4"):
        conv.notes.append(f"{what}: {qtype!r} has no equivalent; using nf4 (4-bit), the smallest wanlora offers")
        return "nf4", adapter.strip()
    conv.notes.append(f"{what}: {qtype!r} has no equivalent; using fp8")
    return "fp8", adapter.strip()


def _name(raw: Any, conv: Conversion) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(raw)).lstrip(".")[:64] or "imported_lora"
    if name != raw:
        conv.notes.append(f"config.name {raw!r} became {name!r} (letters, digits, _ . - only)")
    return name


def _process(cfg: Any, source: str) -> tuple[dict[str, Any], Conversion]:
    """The first ``config.process`` entry (the trainer's settings) and a Conversion holding the job name."""
    conv = Conversion({}, source=source)
    not_aitk = JobError([Finding("error", source, "no config.process list: this does not look like an ai-toolkit job config",
                                 "give the job's .yaml (or the UI's .job_config.json) with config: process: [...]")])
    if not isinstance(cfg, dict):
        raise not_aitk
    top = _Section(cfg, "", conv)
    top.drop("job", "ai-toolkit's job type")
    top.drop("meta", "ai-toolkit metadata")
    holder = _Section(top.take("config"), "config.", conv) if "config" in cfg else top
    procs = holder.take("process", None)
    if not isinstance(procs, list) or not procs or not isinstance(procs[0], dict):
        raise not_aitk
    for i in range(1, len(procs)):
        conv.dropped.append((f"config.process[{i}]", "...", "only the first process is imported"))
    if holder.has("name"):
        _set(conv.job, "job.name", _name(holder.take("name"), conv))
    holder.rest()
    if holder is not top:
        top.rest()
    return procs[0], conv


def convert(cfg: dict[str, Any], source: str = "config.yaml") -> Conversion:
    """Map an ai-toolkit job config (parsed yaml/json) onto our job keys; raises JobError if it is not one."""
    proc_data, conv = _process(cfg, source)
    job = conv.job
    p = _Section(proc_data, "config.process[0].", conv)
    p.take("type")
    trig = p.take("trigger_word", None)
    if trig:
        _set(job, "job.trigger_word", str(trig))
    dev = p.take("device", None)
    if isinstance(dev, str) and re.fullmatch(r"cuda:\d+", dev):
        _set(job, "job.gpus", [int(dev.split(":")[1])])
    elif dev not in (None, "cuda"):
        conv.dropped.append(("config.process[0].device", dev, 'not a CUDA device; job.gpus stays "auto"'))
    p.drop("training_folder", "wanlora writes into the job's own folder; set job.output_dir to copy LoRAs elsewhere")
    for k in ("performance_log_every", "log_every", "logging", "sqlite_db_path", "save_root"):
        p.drop(k, "wanlora logs every step to events.jsonl")
    _model(_Section(p.take("model", {}), "model.", conv), job, conv)
    _train(_Section(p.take("train", {}), "train.", conv), job, conv)
    _network(_Section(p.take("network", {}), "network.", conv), job, conv)
    _save(_Section(p.take("save", {}), "save.", conv), job, conv)
    dsets = p.take("datasets", [])
    job_ds = []
    for i, d in enumerate(dsets if isinstance(dsets, list) else []):
        job_ds.append(_dataset(_Section(d, f"datasets[{i}].", conv), conv))
    if job_ds:
        job["datasets"] = job_ds
    has_sample = isinstance(proc_data.get("sample"), dict)
    _sample(_Section(p.take("sample", {}), "sample.", conv), job, conv)
    p.rest()
    _fill_aitk_defaults(job, conv, has_sample)
    _difference_notes(proc_data, job, conv)
    conv.job = _ordered(job)
    return conv


def _get(job: dict[str, Any], dotted: str) -> Any:
    cur: Any = job
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _fill_aitk_defaults(job: dict[str, Any], conv: Conversion, has_sample: bool) -> None:
    """Keys the ai-toolkit config leaves out get ai-toolkit's own value (not wanlora's), each with a note."""
    for ours, theirs, value, where in AITK_DEFAULTS:
        if _get(job, ours) is _MISSING:
            _set(job, ours, value)
            conv.defaults.append(f"{theirs} not set: ai-toolkit uses {value!r} ({where}) → {ours} = {value!r}")
    if _get(job, "quantization.transformer") is _MISSING:  # model.quantize absent: False, quantize_te follows it
        _set(job, "quantization.transformer", "none")
        conv.defaults.append(f"model.quantize not set: ai-toolkit uses False ({_CM} ModelConfig) → quantization.transformer = 'none'")
    if _get(job, "quantization.text_encoder") is _MISSING:
        te = "none" if job["quantization"]["transformer"] == "none" else "fp8"
        _set(job, "quantization.text_encoder", te)
        conv.defaults.append(f"model.quantize_te not set: ai-toolkit follows model.quantize (qtype_te qfloat8; {_CM} "
                             f"ModelConfig) → quantization.text_encoder = {te!r}")
    for i, d in enumerate(job.get("datasets", [])):
        for ours, theirs, value, where in DATASET_DEFAULTS:
            if ours not in d:
                d[ours] = list(value) if isinstance(value, list) else value
                conv.defaults.append(f"datasets[{i}].{theirs} not set: ai-toolkit uses {value!r} ({where}) → "
                                     f"datasets[{i}].{ours} = {value!r}")
    if not has_sample:
        if _get(job, "sample.enabled") is _MISSING:
            _set(job, "sample.enabled", False)
            conv.defaults.append("no sample section: ai-toolkit makes no previews → sample.enabled = false")
        return
    for ours, theirs, value, where in SAMPLE_DEFAULTS:
        if _get(job, ours) is _MISSING:
            _set(job, ours, value)
            conv.defaults.append(f"{theirs} not set: ai-toolkit uses {value!r} ({where}) → {ours} = {value!r}")
    if _get(job, "sample.enabled") is _MISSING:
        _set(job, "sample.enabled", bool(_get(job, "sample.prompts") not in (_MISSING, [])))


def _difference_notes(proc: dict[str, Any], job: dict[str, Any], conv: Conversion) -> None:
    """What wanlora does differently from ai-toolkit for this config, and the key that would get closer."""
    conv.notes.append(
        "boundary: ai-toolkit trains and samples Wan 2.2 I2V at the T2V boundary 0.875 "
        "(extensions_built_in/diffusion_models/wan22/wan22_14b_model.py: boundary_ratio_t2v and "
        "multistage_boundaries = [0.875, 0.0]; boundary_ratio_i2v = 0.9 is defined but unused), so its high-noise "
        "expert trains on t > 875; wanlora uses the model's own 0.9 from model_index.json (t ≥ 900, the boundary the "
        "inference pipeline routes by); set model.boundary_ratio = 0.875 to reproduce ai-toolkit's split")
    train = proc.get("train") if isinstance(proc.get("train"), dict) else {}
    if str(train.get("timestep_type", "")) == "weighted":
        conv.notes.append(
            "train.timestep_type 'weighted' is the linear table plus a per-timestep loss weight fitted on Flex.1 "
            "(toolkit/samplers/custom_flowmatch_sampler.py get_weights_for_timesteps, "
            "toolkit/timestep_weighing/default_weighing_scheme.py); wanlora trains linear timesteps with plain MSE, "
            "so that loss weighting is lost")
    if "noise_scheduler" not in train:
        conv.notes.append(f"train.noise_scheduler not set: ai-toolkit's code default is 'ddpm' ({_CM} TrainConfig), "
                          "which for Wan skips its flow-match timestep table; wanlora always trains flow matching "
                          "(the UI writes 'flowmatch' for Wan)")
    trig = str(_get(job, "job.trigger_word") if _get(job, "job.trigger_word") is not _MISSING else "")
    if trig.strip():
        _set(job, "job.inject_trigger", True)
        conv.notes.append(
            f"trigger injection: ai-toolkit prepends {trig!r} to every non-regularization caption that lacks it "
            "(toolkit/dataloader_mixins.py get_caption → toolkit/prompt_utils.py inject_trigger_into_prompt); "
            "wanlora does the same (job.inject_trigger = true). One difference: a dropped caption "
            "(caption_dropout) trains as the empty prompt here, as the bare trigger word in ai-toolkit")
    if "seed" not in train:
        conv.notes.append("ai-toolkit draws a fresh random seed each run; wanlora's training.seed (42) makes the "
                          "data order, noise and timesteps reproducible")
    conv.notes.append("ai-toolkit's AdamW uses eps = 1e-6 (toolkit/optimizer.py); wanlora's uses 1e-8")
    for i, d in enumerate(proc.get("datasets") or []):
        if isinstance(d, dict) and d.get("shrink_video_to_frames") is False and "fps" not in d:
            conv.notes.append(f"datasets[{i}]: shrink_video_to_frames = false without fps samples at ai-toolkit's "
                              f"default 24 fps ({_CM} DatasetConfig); frame_sampling = \"fps\" samples at Wan's 16 fps")


def _model(m: _Section, job: dict[str, Any], conv: Conversion) -> None:
    arch = m.take("arch", None)
    if arch is not None and arch != "wan22_14b_i2v":
        raise JobError([Finding("error", "model.arch", f"ai-toolkit arch {arch!r} is not Wan 2.2 I2V A14B",
                                "wanlora trains only arch: wan22_14b_i2v (image-to-video, two 14B experts)")])
    if m.has("name_or_path"):
        _set(job, "model.name_or_path", str(m.take("name_or_path")))
    for k in ("low_vram", "layer_offloading"):
        if m.has(k):
            _set(job, f"model.{k}", bool(m.take(k)))
    if m.has("quantize"):
        if m.take("quantize"):
            q, adapter = _quant(m.take("qtype", "qfloat8"), "model.qtype", conv)
            adapter = str(m.take("accuracy_recovery_adapter", "") or adapter)
            _set(job, "quantization.transformer", q)
            if adapter:
                _set(job, "quantization.recovery_adapter", adapter)
        else:
            _set(job, "quantization.transformer", "none")
            m.drop("qtype", "quantize is false")
    if m.has("quantize_te"):
        if m.take("quantize_te"):
            q, _ = _quant(m.take("qtype_te", "qfloat8"), "model.qtype_te", conv)
            _set(job, "quantization.text_encoder", q)
        else:
            _set(job, "quantization.text_encoder", "none")
            m.drop("qtype_te", "quantize_te is false")
    if m.has("compile"):
        _set(job, "advanced.compile", bool(m.take("compile")))
    for k in ("layer_offloading_transformer_percent", "layer_offloading_text_encoder_percent"):
        m.drop(k, "wanlora's layer_offloading streams every transformer block (no percentage)")
    m.drop("vae_tiling", "no VAE tiling option; latents can be cached instead (datasets[].cache_latents)")
    kw = _Section(m.take("model_kwargs", {}), "model.model_kwargs.", conv)
    for k in ("train_high_noise", "train_low_noise"):
        if kw.has(k):
            _set(job, f"multistage.{k.removeprefix('train_')}", bool(kw.take(k)))
    kw.rest()
    m.rest()


_TIMESTEP_TYPES = {"linear": "linear", "sigmoid": "sigmoid", "shift": "shift", "flux_shift": "shift",
                   "lumina2_shift": "shift", "weighted": "linear"}
_BIAS = {"balanced": "balanced", "content": "high_noise", "style": "low_noise"}
# train.* keys whose value carries over as it is (numbers read by _number): ai-toolkit key -> ours
_TRAIN_DIRECT = {
    "batch_size": "training.batch_size", "steps": "training.steps", "lr": "training.learning_rate",
    "learning_rate": "training.learning_rate", "gradient_accumulation": "training.gradient_accumulation",
    "gradient_accumulation_steps": "training.gradient_accumulation", "max_grad_norm": "training.max_grad_norm",
    "weight_decay": "training.weight_decay", "gradient_checkpointing": "training.gradient_checkpointing",
    "cache_text_embeddings": "training.cache_text_embeddings", "unload_text_encoder": "training.unload_text_encoder",
    "diff_output_preservation": "training.dop.enabled",
    "diff_output_preservation_multiplier": "training.dop.multiplier",
    "diff_output_preservation_class": "training.dop.preservation_class",
    "do_differential_guidance": "advanced.differential_guidance",
    "differential_guidance_scale": "advanced.differential_guidance_scale",
    "switch_boundary_every": "multistage.switch_every", "seed": "training.seed",
    "lr_warmup_steps": "training.lr_warmup_steps"}


def _train(t: _Section, job: dict[str, Any], conv: Conversion) -> None:
    """ai-toolkit's ``train`` table; the helpers run in this order so notes and dropped keys keep theirs."""
    for k, ours in _TRAIN_DIRECT.items():
        if t.has(k):
            _set(job, ours, _number(t.take(k)))
    op = _Section(t.take("optimizer_params", {}), "train.optimizer_params.", conv)
    if op.has("weight_decay"):
        _set(job, "training.weight_decay", _number(op.take("weight_decay")))
    op.rest()
    _train_optimizer(t, job, conv)
    _train_timesteps(t, job, conv)
    ema = _Section(t.take("ema_config", {}), "train.ema_config.", conv)
    if ema.has("use_ema"):
        _set(job, "training.ema", bool(ema.take("use_ema")))
    if ema.has("ema_decay"):
        _set(job, "training.ema_decay", _number(ema.take("ema_decay")))
    ema.rest()
    if t.has("disable_sampling"):
        _set(job, "sample.enabled", not bool(t.take("disable_sampling")))
    _train_fixed(t, conv)
    t.rest()


def _train_optimizer(t: _Section, job: dict[str, Any], conv: Conversion) -> None:
    """``train.optimizer`` and ``train.lr_scheduler``: the ones wanlora offers, the rest dropped with why."""
    if t.has("optimizer"):
        opt = str(t.take("optimizer")).lower()
        if opt in ("adamw", "adamw8bit"):
            _set(job, "training.optimizer", opt)
        elif opt in ("adam8bit", "adam8", "adamw8"):
            _set(job, "training.optimizer", "adamw8bit")
            conv.notes.append(f"train.optimizer {opt!r} became adamw8bit")
        else:
            conv.dropped.append(("train.optimizer", opt, "wanlora offers adamw and adamw8bit; using adamw"))
    if t.has("lr_scheduler"):
        sched = str(t.take("lr_scheduler")).lower()
        if sched in ("constant", "cosine", "linear"):
            _set(job, "training.lr_scheduler", sched)
        else:
            conv.dropped.append(("train.lr_scheduler", sched, "wanlora offers constant, cosine and linear; using constant"))


def _train_timesteps(t: _Section, job: dict[str, Any], conv: Conversion) -> None:
    """``train.timestep_type`` and ``train.content_or_style`` → training.timestep_type / timestep_bias."""
    if t.has("timestep_type"):
        tt = str(t.take("timestep_type"))
        if tt in _TIMESTEP_TYPES:
            _set(job, "training.timestep_type", _TIMESTEP_TYPES[tt])
            if _TIMESTEP_TYPES[tt] != tt:
                conv.notes.append(f"train.timestep_type {tt!r} became {_TIMESTEP_TYPES[tt]!r}")
        else:
            conv.dropped.append(("train.timestep_type", tt, "wanlora offers linear, sigmoid and shift"))
    if t.has("content_or_style"):
        cs = str(t.take("content_or_style"))
        if cs in _BIAS:
            _set(job, "training.timestep_bias", _BIAS[cs])
        else:
            conv.dropped.append(("train.content_or_style", cs, "expected balanced, content or style"))


def _train_fixed(t: _Section, conv: Conversion) -> None:
    """Keys whose other values wanlora does not offer (flow matching, MSE, bf16, transformer-only LoRA)."""
    if t.has("noise_scheduler") and str(t.take("noise_scheduler")) != "flowmatch":
        conv.dropped.append(("train.noise_scheduler", t.data["noise_scheduler"], "wanlora always trains Wan with flow matching"))
    if t.has("loss_type") and str(t.take("loss_type")) != "mse":
        conv.dropped.append(("train.loss_type", t.data["loss_type"], "wanlora trains with MSE (the guide's choice for flow matching)"))
    if t.has("dtype") and str(t.take("dtype")) not in ("bf16", "bfloat16"):
        conv.dropped.append(("train.dtype", t.data["dtype"], "wanlora computes in bf16"))
    if t.has("train_unet") and not t.take("train_unet"):
        conv.dropped.append(("train.train_unet", False, "wanlora always trains the transformer LoRA"))
    if t.has("train_text_encoder") and t.take("train_text_encoder"):
        conv.dropped.append(("train.train_text_encoder", True, "wanlora never trains the text encoder"))
    for k in ("skip_first_sample", "force_first_sample", "disable_first_sample"):
        t.drop(k, "wanlora makes previews every sample.every steps only")


def _number(v: Any) -> Any:
    """yaml reads ``1e-4`` as the string '1e-4' (YAML 1.1); turn numeric strings into numbers."""
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if f.is_integer() and re.fullmatch(r"[+-]?\d+", v.strip()) else f
    return v


def _network(n: _Section, job: dict[str, Any], conv: Conversion) -> None:
    typ = str(n.take("type", "lora")).lower()
    if typ != "lora":
        conv.notes.append(f"network.type {typ!r}: wanlora trains a plain LoRA")
    rank = n.take("linear", None)
    if rank is not None:
        _set(job, "target.rank", int(rank))
    alpha = n.take("linear_alpha", None)
    if alpha is not None and rank is not None:
        _set(job, "target.alpha", float(rank))
        if float(alpha) != float(rank):
            conv.notes.append(f"network.linear_alpha {alpha} was ignored by ai-toolkit for Wan (its LoRAs use alpha = rank); "
                              f"target.alpha = {rank} reproduces that")
    elif alpha is not None:
        _set(job, "target.alpha", float(alpha))
    n.drop("conv", "Wan's transformer blocks have no conv layers to adapt")
    n.drop("conv_alpha", "Wan's transformer blocks have no conv layers to adapt")
    if n.has("split_multistage_loras") and not n.take("split_multistage_loras"):
        conv.notes.append("network.split_multistage_loras = false: wanlora always writes one LoRA file per expert")
    n.take("transformer_only")
    n.rest()


_SAVE_DTYPES = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "fp32": "fp32", "float32": "fp32"}


def _save(s: _Section, job: dict[str, Any], conv: Conversion) -> None:
    if s.has("dtype"):
        dt = str(s.take("dtype")).lower()
        if dt in _SAVE_DTYPES:
            _set(job, "save.dtype", _SAVE_DTYPES[dt])
        else:
            conv.dropped.append(("save.dtype", dt, "use bf16, fp16 or fp32"))
    if s.has("save_every"):
        _set(job, "save.every", int(s.take("save_every")))
    if s.has("max_step_saves_to_keep"):
        _set(job, "save.max_keep", int(s.take("max_step_saves_to_keep")))
    s.drop("save_format", "wanlora writes ComfyUI-native keys that diffusers also loads")
    _push(s, job, conv)
    s.rest()


def _push(s: _Section, job: dict[str, Any], conv: Conversion) -> None:
    """ai-toolkit's ``push_to_hub`` (bool) + ``hf_repo_id`` + ``hf_private`` → our ``push_to_hub = "owner/name"``.

    ai-toolkit's ``hf_private`` defaults to false (a public repo); left out, the import keeps ours (private)
    and says so: publishing is a choice to make on purpose.
    """
    if not s.has("push_to_hub") and not s.has("hf_repo_id"):
        return
    on, repo, private = bool(s.take("push_to_hub", False)), s.take("hf_repo_id", None), s.take("hf_private", None)
    repo = str(repo).strip() if repo is not None else ""
    if not on:
        if repo:
            conv.notes.append(f"save.hf_repo_id {repo!r} is not used: push_to_hub is false in the config; "
                              f'save.push_to_hub = "{repo}" uploads the final pair when the job completes')
        return
    problem = hub_repo_problem(repo) if repo else "push_to_hub is true but hf_repo_id is not set"
    if problem:
        conv.dropped.append((f"{s.prefix}push_to_hub", True, f'{problem}; set save.push_to_hub = "owner/name"'))
        return
    _set(job, "save.push_to_hub", repo)
    if private is None:
        _set(job, "save.push_private", True)
        conv.notes.append(f"save.hf_private is not set, so ai-toolkit would make {repo} public; wanlora creates it "
                          "private (save.push_private = false publishes it)")
    else:
        _set(job, "save.push_private", bool(private))


def _dataset(d: _Section, conv: Conversion) -> dict[str, Any]:
    out: dict[str, Any] = {}
    simple = {"folder_path": "folder", "caption_ext": "caption_ext", "default_caption": "default_caption",
              "caption_dropout_rate": "caption_dropout", "num_frames": "num_frames", "flip_x": "flip_x",
              "flip_y": "flip_y", "is_reg": "is_regularization", "network_weight": "weight"}
    for k, ours in simple.items():
        if d.has(k):
            out[ours] = _number(d.take(k))
    cache = [d.take(k) for k in ("cache_latents_to_disk", "cache_latents") if d.has(k)]
    if cache:
        out["cache_latents"] = any(bool(c) for c in cache)
    if d.has("resolution"):
        res = d.take("resolution")
        out["resolutions"] = [int(r) for r in (res if isinstance(res, list) else [res])]
    if d.has("shrink_video_to_frames"):
        shrink = bool(d.take("shrink_video_to_frames"))
        out["frame_sampling"] = "even" if shrink else "fps"
        if not shrink and d.has("fps") and float(d.data["fps"]) != 16:
            conv.dropped.append((f"{d.prefix}fps", d.data["fps"], 'frame_sampling = "fps" always samples at Wan\'s 16 fps'))
        d.take("fps")
    else:
        d.drop("fps", "only used with shrink_video_to_frames = false")
    d.drop("num_repeats", "use datasets[].weight to balance datasets")
    d.rest()
    return out


def _sample(s: _Section, job: dict[str, Any], conv: Conversion) -> None:
    simple = {"sample_every": "every", "width": "width", "height": "height", "neg": "negative_prompt",
              "seed": "seed", "walk_seed": "walk_seed", "guidance_scale": "guidance_scale",
              "sample_steps": "steps", "num_frames": "num_frames", "fps": "fps"}
    for k, ours in simple.items():
        if s.has(k):
            _set(job, f"sample.{ours}", _number(s.take(k)))
    if s.has("sampler"):
        sm = str(s.take("sampler")).lower()
        if sm in ("flowmatch", "unipc"):
            _set(job, "sample.sampler", sm)
        else:
            conv.dropped.append(("sample.sampler", sm, "wanlora offers flowmatch and unipc"))
    prompts: list[dict[str, Any]] = []
    for i, item in enumerate(s.take("samples", []) or []):
        sec = _Section(item, f"sample.samples[{i}].", conv)
        row: dict[str, Any] = {"prompt": str(sec.take("prompt", "")), "ctrl_img": str(sec.take("ctrl_img", "") or "")}
        if sec.has("neg"):
            row["neg"] = str(sec.take("neg"))
        if sec.has("seed"):
            row["seed"] = int(sec.take("seed"))
        sec.rest("per-prompt setting; wanlora uses the [sample] value for every prompt")
        prompts.append(row)
    for i, text in enumerate(s.take("prompts", []) or []):
        prompts.append(_prompt_with_flags(str(text), i, conv))
    if prompts:
        _set(job, "sample.prompts", prompts)
        if "enabled" not in job.get("sample", {}):
            _set(job, "sample.enabled", True)
            conv.notes.append("sample.enabled = true because ai-toolkit samples during training unless "
                              "train.disable_sampling is set (the guide keeps previews off for Wan I2V)")
    s.rest()


def _prompt_with_flags(text: str, i: int, conv: Conversion) -> dict[str, Any]:
    """Old-style prompt strings: ``"a cat walking --ctrl_img /x.png --seed 3"``."""
    parts = re.split(r"\s--(\w+)\s+", " " + text)
    row: dict[str, Any] = {"prompt": parts[0].strip(), "ctrl_img": ""}
    for flag, value in zip(parts[1::2], parts[2::2], strict=False):
        value = value.strip()
        if flag == "ctrl_img":
            row["ctrl_img"] = value
        elif flag == "seed" and value.isdigit():
            row["seed"] = int(value)
        elif flag in ("neg", "n"):
            row["neg"] = value
        else:
            conv.dropped.append((f"sample.prompts[{i}] --{flag}", value, "per-prompt setting; wanlora uses the [sample] value"))
    return row


def _ordered(job: dict[str, Any]) -> dict[str, Any]:
    """Sections in the guide's panel order and keys in the schema's order (what a reader expects)."""
    return {name: _by_schema(job[name], section_model(name)) for name, _ in PANELS if name in job}


def _by_schema(value: Any, model: type[BaseModel]) -> Any:
    if isinstance(value, list):
        return [_by_schema(v, model) for v in value]
    if not isinstance(value, dict):
        return value
    order = list(model.model_fields)
    out = {}
    for k in sorted(value, key=lambda k: order.index(k) if k in order else len(order)):
        sub = model.model_fields.get(k)
        ann = sub.annotation if sub else None
        if k == "prompts":
            out[k] = _by_schema(value[k], SamplePrompt)
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            out[k] = _by_schema(value[k], ann)
        else:
            out[k] = value[k]
    return out


def convert_file(path: Path | str) -> Conversion:
    """Read an ai-toolkit ``.yaml``/``.json`` job config and convert it; errors name the file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobError([Finding("error", str(path), "file not found", "check the path")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise JobError([Finding("error", str(path), f"cannot read the file ({e})", "give a UTF-8 yaml or json file")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise JobError([Finding("error", str(path), f"not valid yaml: {e}", "fix the syntax at that line")]) from None
    return convert(data, str(path))


def to_toml(conv: Conversion) -> str:
    """The job file text, with the changed values and the keys not imported as comments on top."""
    lines = [f"# Converted from the ai-toolkit config {conv.source} by `wanlora import-aitk`.",
             "# Every setting ai-toolkit would use is written out (its own defaults for keys the config left out),",
             "# so recipe and VRAM tier layers do not change the run; only wanlora-only keys take wanlora's defaults.",
             "# See them with `wanlora show THIS.toml`, check with `wanlora validate THIS.toml`."]
    if conv.notes:
        lines.append("#\n# Changed on the way, and where wanlora differs from ai-toolkit:")
        lines += [f"#   - {n}" for n in conv.notes]
    if conv.defaults:
        lines.append("#\n# Not in the ai-toolkit config, so set to ai-toolkit's own default (not wanlora's):")
        lines += [f"#   - {n}" for n in conv.defaults]
    if conv.dropped:
        lines.append("#\n# Not imported:")
        for key, value, why in conv.dropped:
            shown = repr(value) if not isinstance(value, dict | list) else "{...}" if isinstance(value, dict) else "[...]"
            lines.append(f"#   - {key} = {shown[:60]}: {why}")
    return "\n".join(lines) + "\n\n" + tomli_w.dumps(conv.job)
