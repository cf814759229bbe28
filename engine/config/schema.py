"""The job schema: the one place every knob is defined.

Each TOML section of a job file is one model below, named and ordered like the guide's panels (JOB, MODEL,
QUANTIZATION, MULTISTAGE, TARGET, SAVE, TRAINING, ADVANCED, DATASETS, SAMPLE).  Types, ranges, defaults and
the one-line help (from the guide) live on the fields; the wizard, ``wanlora validate``, the presets and the
docs all read them from here.  Pure pydantic: importing this never imports torch.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import make_dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic.fields import FieldInfo
from wanlora.engine.config.experts import (
    EXPERT_SETTING_KEYS,
    EXPERT_SETTINGS,
    EXPERTS,
    ExpertSetting,
    trained_experts,
)

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
VRAM_TIERS = (12, 24, 32, 48, 80, 141)
RECIPES = ("motion", "style", "character", "custom")
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")


def F(default: Any, help: str, **kw: Any) -> Any:  # noqa: N802 - short on purpose: used ~80 times
    """A schema field: default + the guide's one-line help (+ pydantic constraints)."""
    return Field(default, description=help, **kw)


class Section(BaseModel):
    """Base for every section: unknown keys are errors, assignments are re-validated (the wizard edits live).

    Strict: ``rank = "8"``, ``steps = 4.0`` and ``low_noise = 0`` are refused rather than coerced (a quoted
    number or a 0/1 flag is usually a mistake the user should see); an int is still accepted for a float.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class JobSection(Section):
    name: str = F("my_wan_lora", "Folder and file names of this run; letters, digits, _ . - only, at most 64 characters.")
    trigger_word: str = F("", "Replaces [trigger] in captions and sample prompts; recommended for style, required for character LoRAs.")
    inject_trigger: bool = F(
        True, "With a trigger word: prepend it to every non-regularization caption that lacks it (as ai-toolkit does); false = only replace [trigger]."
    )
    gpus: Literal["auto", "all"] | list[int] = F(
        "auto", "Which GPUs: \"auto\" (one free GPU), \"all\", or a list like [0,1]; more than one = data parallel."
    )
    nodes: int = F(1, "Number of machines (torchrun rendezvous); 1 for a single machine.", ge=1, le=64)
    output_dir: str = F("", "Where LoRAs and samples go; empty = the job's own folder, relative = inside it, absolute = under WANLORA_HOME or an output_roots folder of the daemon's config.toml.")
    preset: Literal["motion", "style", "character", "custom"] = F(
        "custom", "The recipe the job started from: motion, style, character or custom."
    )
    vram_tier: Literal["auto"] | Literal[12, 24, 32, 48, 80, 141] = F(
        "auto", "GPU memory class in GiB whose settings apply; auto = detect from the GPU's free memory."
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("use only letters, digits, '_', '.', '-' (1-64 characters), e.g. wan_i2v_orbit_v1")
        if v in (".", "..") or v.startswith("."):
            raise ValueError("the name must not start with '.'; e.g. wan_i2v_orbit_v1")
        return v

    @field_validator("gpus")
    @classmethod
    def _gpus_ok(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError('give at least one GPU index, or "auto"')
            if any(i < 0 for i in v) or len(set(v)) != len(v):
                raise ValueError("GPU indices must be distinct and >= 0, e.g. [0, 1]")
        return v


class ModelSection(Section):
    arch: Literal["wan22_14b_i2v"] = F("wan22_14b_i2v", "Model family; Wan 2.2 I2V A14B (two 14B experts).")
    name_or_path: str = F(
        "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "Hub id (org/name[@revision]) or a local diffusers folder; parts given "
        "as *_file below come from those files instead (`wanlora model find` lists what this machine has)."
    )
    high_noise_file: str = F(
        "", "Single-file high-noise expert you already have (ComfyUI's wan2.2_i2v_high_noise_14B_*.safetensors, or "
        "the original release's high_noise_model/ shards; bf16/fp16/fp8_scaled); empty = from name_or_path."
    )
    low_noise_file: str = F("", "Single-file low-noise expert (ComfyUI / original Wan keys); empty = from name_or_path.")
    text_encoder_file: str = F(
        "", "Single-file UMT5-XXL text encoder (ComfyUI's umt5_xxl_fp16 / fp8_e4m3fn_scaled); empty = from name_or_path."
    )
    vae_file: str = F("", "Single-file Wan 2.1 VAE (ComfyUI's wan_2.1_vae.safetensors); empty = from name_or_path.")
    low_vram: bool = F(False, "Keep only the active expert on the GPU and unload the text encoder/VAE after use (24-32 GB cards).")
    layer_offloading: bool = F(
        False, "Stream transformer blocks from pinned CPU memory (10-12 GB cards; needs about 64 GB of RAM)."
    )
    boundary_ratio: Literal["auto"] | float = F(
        "auto", "Noise level where the high-noise expert hands over; auto = the model's own model_index.json (0.9 for "
        "I2V A14B, also with single files)."
    )

    @field_validator("boundary_ratio")
    @classmethod
    def _boundary_ok(cls, v: Any) -> Any:
        if v != "auto" and not (0.0 < float(v) < 1.0):
            raise ValueError('must be between 0 and 1 (exclusive), or "auto"')
        return v


class QuantizationSection(Section):
    transformer: Literal["none", "fp8", "nf4"] = F(
        "none", "Base weights of the experts: none (bf16), fp8 (half the memory), nf4 (the guide's 4-bit, ~quarter)."
    )
    recovery_adapter: str = F("", "Optional accuracy-recovery LoRA (safetensors) applied frozen on top of a quantised base.")
    text_encoder: Literal["none", "fp8", "nf4"] = F("fp8", "Text encoder weights; fp8 saves ~5 GB with no visible cost.")


TimestepType = Literal["linear", "sigmoid", "shift"]
TimestepBias = Literal["balanced", "high_noise", "low_noise"]


class TargetSection(Section):
    type: Literal["lora"] = F("lora", "Adapter type.")
    rank: int = F(16, "LoRA capacity per layer; 16 suits most LoRAs, 32 for complex looks or close-up faces on big GPUs.", ge=1, le=256)
    alpha: float | None = F(None, "LoRA scale numerator (scale = alpha/rank); empty = rank.", gt=0, le=1024)
    modules: Literal["attn+ffn", "attn", "ffn"] = F("attn+ffn", "Which Linear layers of each block get adapters.")

    @property
    def effective_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else float(self.rank)


HUB_REPO_PART = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$")


def hub_repo_problem(value: str) -> str | None:
    """Why ``value`` is not a Hugging Face model repo id (``owner/name``), as "what; fix", or None when it is.

    The Hub's own rules (huggingface_hub's validate_repo_id), plus an owner: the card and the URL name it.
    """
    v = value.strip()
    example = "e.g. yourname/orbit-lora"
    if v.startswith(("http://", "https://")) or v.startswith("huggingface.co/"):
        tail = "/".join(v.split("://")[-1].split("/")[1:3])
        return f"give the repo id, not its URL; write {tail or example!r}"
    if v.count("/") != 1:
        return ("a Hub repo id is owner/name (one '/'); write your user or organisation name, a '/', then the "
                f"repo name, {example}")
    for part in v.split("/"):
        if not HUB_REPO_PART.match(part) or "--" in part or ".." in part:
            return (f"{part!r} is not a valid owner or repo name; use letters, digits, '-', '_' and '.' ('-' and "
                    f"'.' not first or last, no '--' or '..'), at most 96 characters ({example})")
    if v.endswith(".git"):
        return f"a repo id has no .git ending; write {v[:-4]!r}"
    return None


class SaveSection(Section):
    dtype: Literal["bf16", "fp16", "fp32"] = F("bf16", "Data type of the saved LoRA files.")
    every: int = F(250, "Save a checkpoint pair every N steps.", ge=1, le=1_000_000)
    max_keep: int = F(4, "Step checkpoints kept (the final one is always kept).", ge=1, le=1000)
    push_to_hub: str = F(
        "", "Hugging Face repo (owner/name) that gets the final LoRA pair and a model card once the job completes; "
            "empty = off. Token: HF_TOKEN in the daemon's environment or `hf auth login`; `wanlora push JOB` retries."
    )
    push_private: bool = F(True, "Create the Hub repo private (an existing repo keeps its visibility).")

    @field_validator("push_to_hub")
    @classmethod
    def _repo_ok(cls, v: str) -> str:
        if v.strip():
            problem = hub_repo_problem(v)
            if problem:
                raise ValueError(problem)
        return v.strip()


class DopSection(Section):
    enabled: bool = F(False, "Differential Output Preservation: keep the base model's behaviour where the trigger is absent.")
    multiplier: float = F(1.0, "Weight of the preservation loss.", ge=0.0, le=100.0)
    preservation_class: str = F("person", "Word that replaces the trigger for the preservation pass (person, scene, landscape...).")


class TrainingSection(Section):
    batch_size: int = F(1, "Clips per step.", ge=1, le=64)
    gradient_accumulation: int = F(1, "Micro-batches per optimizer step.", ge=1, le=1024)
    learning_rate: float = F(1e-4, "Start at 1e-4; drop to 5e-5 if training looks noisy or overshoots.", gt=0, le=1e-2)
    steps: int = F(2000, "Total optimizer steps; 1500-2500 for motion/style, 2000-3000 for characters.", ge=1, le=1_000_000)
    optimizer: Literal["adamw", "adamw8bit"] = F("adamw", "AdamW, or 8-bit AdamW (bitsandbytes, CUDA only) to save memory.")
    lr_scheduler: Literal["constant", "cosine", "linear"] = F("constant", "Learning-rate schedule after warm-up.")
    lr_warmup_steps: int = F(0, "Linear warm-up steps.", ge=0, le=100_000)
    max_grad_norm: float = F(1.0, "Gradient clipping norm; 0 = off.", ge=0.0, le=1000.0)
    weight_decay: float = F(1e-4, "AdamW weight decay.", ge=0.0, le=1.0)
    loss: Literal["mse"] = F("mse", "Loss function on the flow-matching target.")
    timestep_type: TimestepType = F(
        "linear", "How timesteps are spread: linear (default), sigmoid (middle-heavy, characters), shift (toward high noise)."
    )
    timestep_bias: TimestepBias = F(
        "balanced", "Which part of each expert's range to favour: balanced, high_noise (motion/look), low_noise (detail)."
    )
    ema: bool = F(False, "Keep an exponential moving average of the LoRA weights and save that.")
    ema_decay: float = F(0.99, "EMA decay per step.", gt=0.0, lt=1.0)
    cache_text_embeddings: bool = F(
        True, "Encode every caption, the empty prompt, DOP's class prompts and the preview prompts once, then free the "
              "text encoder for training (works with caption dropout and DOP here; ai-toolkit's cache cannot, which is "
              "why the guide says to leave it off there).")
    unload_text_encoder: bool = F(
        False, "Encode only the trigger word once and drop the text encoder; per-clip captions are then ignored."
    )
    gradient_checkpointing: bool = F(True, "Recompute activations in backward; needed for video on any GPU.")
    seed: int = F(42, "Random seed for data order, noise and timesteps.", ge=0, le=2**31 - 1)
    dop: DopSection = Field(default_factory=DopSection, description="Differential Output Preservation.")


class AdvancedSection(Section):
    differential_guidance: bool = F(False, "Push the target beyond the current prediction (target' = pred + s*(target-pred)).")
    differential_guidance_scale: float = F(3.0, "Scale s of differential guidance; 3 for edit-like LoRAs, 1-2 for heavy looks.", ge=0.0, le=20.0)
    compile: bool = F(True, "torch.compile each transformer block on CUDA (~20-30% faster per step after ~30 s warm-up per bucket).")
    attention_backend: Literal["auto", "flash4", "native", "cudnn", "flash", "efficient", "math"] = F(
        "auto", "Attention kernel; auto = the fastest measured: FlashAttention-4 on Hopper/Blackwell when installed "
                "(pip install -e '.[cuda]'), else PyTorch SDPA (cuDNN on Hopper); flash4 falls back the same way."
    )
    fsdp: bool = F(False, "Multi-GPU only: shard the frozen bf16 base over the GPUs (FSDP2) when one expert does not fit one GPU; slower, LoRA stays replicated.")
    multi_gpu: Literal["auto", "data", "expert"] = F(
        "auto", "Several GPUs: expert = half the GPUs train each expert at once (resident, no swaps); data = all GPUs "
                "alternate the experts together; auto = expert when the GPU count is even, both experts train and "
                "fsdp, previews and eval are off (docs/multi-node.md)."
    )
    lora_master_dtype: Literal["fp32", "bf16"] = F(
        "fp32", "Precision the LoRA weights and their optimizer moments are kept in; the matmuls run in bf16 on a GPU "
                "either way. fp32 (as ai-toolkit does) keeps small updates that bf16 rounds away (at lr 1e-5 most bf16 "
                "entries never change) for 8 more bytes per LoRA parameter; bf16 = earlier wanlora builds, for comparisons."
    )


class DatasetSection(Section):
    folder: str = F("", "Folder of clips (.mp4 .mov .mkv .webm .avi) and/or images with same-name .txt captions.")
    default_caption: str = F("", "Caption for files without a .txt.")
    caption_ext: str = F("txt", "Extension of caption files.")
    caption_dropout: float = F(0.05, "Share of steps trained with an empty caption (0.05-0.1).", ge=0.0, le=1.0)
    weight: float = F(1.0, "Relative sampling weight between datasets.", gt=0.0, le=1000.0)
    is_regularization: bool = F(False, "Regularization data: keeps the base model's behaviour.")
    is_eval: bool = F(False, "Held-out evaluation data: never trained on; its loss at fixed timesteps is measured at every save.")
    eval_fraction: float = F(
        0.0, "Share of this dataset's clips held out for evaluation (0-0.5), picked by file name; 0 = none.", ge=0.0, le=0.5
    )
    cache_latents: bool = F(
        True, "Encode clips through the VAE once and reuse them (video too), so the VAE leaves the GPU while the experts "
              "train (it comes back for previews); ai-toolkit cannot cache multi-frame latents.")
    flip_x: bool = F(False, "Mirror frames horizontally; off for motion and character LoRAs.")
    flip_y: bool = F(False, "Mirror frames vertically; rarely useful.")
    resolutions: list[int] = F([512, 768], "Bucket sizes (area ~ res^2, sides multiple of 16); 512/768, 1024 only on big GPUs.")
    num_frames: int = F(41, "Frames per clip: 1 or 4n+1 (9, 13, 17, 21, 33, 41, 81).", ge=1, le=257)
    frame_sampling: Literal["even", "fps"] = F(
        "even", "even = num_frames spread over the whole clip (the guide's); fps = consecutive frames at 16 fps (real speed)."
    )

    @field_validator("resolutions")
    @classmethod
    def _res_ok(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one resolution, e.g. [512]")
        for r in v:
            if r < 64 or r > 2048:
                raise ValueError(f"{r} is outside 64..2048")
            if r % 16:
                raise ValueError(f"{r} is not a multiple of 16; use {round(r / 16) * 16}")
        return v

    @field_validator("caption_ext")
    @classmethod
    def _ext_ok(cls, v: str) -> str:
        v = v.lstrip(".")
        if not re.match(r"^[A-Za-z0-9]{1,8}$", v):
            raise ValueError("use a plain extension like txt")
        return v


# Wan's own negative prompt: ``sample_neg_prompt`` of the Wan 2.2 release (wan/configs/shared_config.py), which
# its generate.py and ComfyUI's Wan templates use.  A model-facing constant: the exact string, not prose.
WAN_NEGATIVE_PROMPT = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"


class SamplePrompt(Section):
    prompt: str = F("", "What the preview should show.")
    ctrl_img: str = F("", "First frame for the I2V preview; required for every prompt.")
    seed: int | None = F(None, "Seed for this prompt; empty = [sample] seed (walked per prompt if walk_seed).")
    neg: str = F("", "Negative prompt for this preview; empty = [sample] negative_prompt.")


class SampleSection(Section):
    enabled: bool = F(False, "Previews during training; the guide keeps them off for Wan I2V and evaluates afterwards.")
    every: int = F(250, "Make previews every N steps.", ge=1, le=1_000_000)
    sampler: Literal["flowmatch", "unipc"] = F("flowmatch", "Sampler for previews.")
    width: int = F(768, "Preview width (multiple of 16).", ge=16, le=2048, multiple_of=16)
    height: int = F(768, "Preview height (multiple of 16).", ge=16, le=2048, multiple_of=16)
    num_frames: int = F(41, "Preview frames (4n+1).", ge=1, le=257)
    fps: int = F(16, "Preview video frame rate.", ge=1, le=120)
    guidance_scale: float = F(3.5, "CFG scale for both experts (Wan's own: 3.5).", ge=0.0, le=30.0)
    steps: int = F(25, "Denoising steps; 25 is enough.", ge=1, le=200)
    seed: int = F(42, "Seed of the first prompt.", ge=0, le=2**31 - 1)
    walk_seed: bool = F(True, "Add the prompt's index to the seed so each prompt differs.")
    negative_prompt: str = F(
        WAN_NEGATIVE_PROMPT, "Negative prompt for all previews; the default is Wan's own (the Wan 2.2 release's and "
                             "ComfyUI's), \"\" = none.")
    prompts: list[SamplePrompt] = Field(default_factory=list, description="Preview prompts, each with its ctrl_img.")
    accelerator_lora: str | list[str] = F(
        "", "Step-distilled LoRA pair for fast previews only (e.g. LightX2V 4-step): a folder, [high, low] files, or one file for both."
    )
    accelerator_steps: int = F(4, "Denoising steps when accelerator_lora is set (4 for LightX2V's 4-step LoRAs).", ge=1, le=200)
    accelerator_guidance_scale: float = F(1.0, "CFG scale when accelerator_lora is set (distilled LoRAs run without CFG: 1).", ge=0.0, le=30.0)


# The sections a per-expert setting may fall back to (every table of Job above this point but multistage).
_JOB_WIDE: dict[str, type[Section]] = {"job": JobSection, "model": ModelSection, "quantization": QuantizationSection,
                                       "target": TargetSection, "save": SaveSection, "training": TrainingSection,
                                       "advanced": AdvancedSection}


def _job_wide_field(dotted: str) -> FieldInfo:
    section, _, key = dotted.partition(".")
    model = _JOB_WIDE.get(section)
    if model is None or key not in model.model_fields:
        raise ValueError(f"EXPERT_SETTINGS: {dotted!r} is not a job-wide key (one of {', '.join(_JOB_WIDE)})")
    return model.model_fields[key]


def _expert_field(s: ExpertSetting) -> tuple[Any, Any]:
    """An expert's own field for ``s``: the job-wide field's type and bounds, empty (None) by default."""
    g = _job_wide_field(s.falls_back_to)
    ann = g.annotation if type(None) in typing.get_args(g.annotation) else g.annotation | None
    bounds = {a: getattr(m, a) for m in g.metadata for a in ("gt", "ge", "lt", "le", "multiple_of")
              if getattr(m, a, None) is not None}
    return ann, F(None, s.help, **bounds)


class _ExpertTrain(Section):
    """One expert: whether it trains, and settings of its own where it should differ (empty = the job-wide value).

    ``high_noise = true`` is shorthand for a table with only ``train``.  Users find the high-noise expert
    overtrains before the low-noise one (diffusion-pipe #372; ai-toolkit PR #474, closed unmerged), so each
    expert may have its own learning rate, rank/alpha (each expert has its own LoRA file) and timestep shaping:
    the fields after ``train`` are made from ``engine.config.experts.EXPERT_SETTINGS``.
    Truthiness is ``train``, so ``if job.multistage.high_noise:`` keeps meaning "is it trained".
    """

    train: bool = F(True, "Train this expert (high noise: composition, motion, camera; low noise: detail, identity, texture).")

    def __bool__(self) -> bool:
        return self.train

    def overrides(self) -> dict[str, Any]:
        """The settings this expert sets itself (``train`` aside)."""
        return {k: v for k, v in self.model_dump().items() if k != "train" and v is not None}


ExpertSettings = create_model("ExpertSettings", __base__=_ExpertTrain, __module__=__name__,
                              __doc__=_ExpertTrain.__doc__, **{s.key: _expert_field(s) for s in EXPERT_SETTINGS})


def _expert_shorthand(v: Any) -> Any:
    if isinstance(v, bool):
        return {"train": v}
    if isinstance(v, ExpertSettings | dict):
        return v
    what = "use true/false (not 0/1)" if isinstance(v, int | float) else "use true/false"
    raise ValueError(f"{what}, or a [multistage.high_noise] / [multistage.low_noise] table; "
                     "e.g. high_noise = true, or [multistage.high_noise] learning_rate = 5e-5")


class MultistageSection(Section):
    switch_every: int = F(
        10, "Steps on one expert before switching; 1 only if both experts stay resident, 10-50 with low VRAM/offload.",
        ge=1, le=10000,
    )
    high_noise: ExpertSettings = Field(
        default_factory=ExpertSettings,
        description="The high-noise expert (composition, motion, camera): `high_noise = true|false`, or this table "
                    "with settings of its own; an empty key takes the job-wide value.")
    low_noise: ExpertSettings = Field(
        default_factory=ExpertSettings,
        description="The low-noise expert (detail, identity, texture): `low_noise = true|false`, or this table "
                    "with settings of its own; an empty key takes the job-wide value.")

    @field_validator("high_noise", "low_noise", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return _expert_shorthand(v)

    def trained(self) -> list[str]:
        """The experts that train, high noise first (none is validation's error, not an exception here)."""
        return trained_experts(self.high_noise.train, self.low_noise.train, required=False)


class Job(Section):
    """A whole job file.  Section names are the TOML tables."""

    job: JobSection = Field(default_factory=JobSection)
    model: ModelSection = Field(default_factory=ModelSection)
    quantization: QuantizationSection = Field(default_factory=QuantizationSection)
    multistage: MultistageSection = Field(default_factory=MultistageSection)
    target: TargetSection = Field(default_factory=TargetSection)
    save: SaveSection = Field(default_factory=SaveSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    advanced: AdvancedSection = Field(default_factory=AdvancedSection)
    datasets: list[DatasetSection] = Field(default_factory=list)
    sample: SampleSection = Field(default_factory=SampleSection)


def _value_type(s: ExpertSetting) -> type:
    """The type of an expert's resolved value: the job-wide field's without None (a Literal's is str)."""
    ann = _job_wide_field(s.falls_back_to).annotation
    if typing.get_origin(ann) in (typing.Union, types.UnionType):  # `float | None`: a resolved value is never None
        ann = next(a for a in typing.get_args(ann) if a is not type(None))
    return str if typing.get_origin(ann) is Literal else ann


_VALUE_TYPES: dict[str, type] = {s.key: _value_type(s) for s in EXPERT_SETTINGS}


class _PlanViews:
    """What :class:`ExpertPlan` offers besides its fields, each a view the trainer or a report writes out."""

    expert: str
    sources: dict[str, str]

    def settings(self) -> dict[str, Any]:
        """Every per-expert setting's value, in EXPERT_SETTINGS order."""
        return {k: getattr(self, k) for k in EXPERT_SETTING_KEYS}

    def as_dict(self) -> dict[str, Any]:
        """The values and, under ``sources``, the key that supplied each (the ``ready`` event's entry)."""
        return {**self.settings(), "sources": dict(self.sources)}

    def training_metadata(self) -> dict[str, Any]:
        """The settings a LoRA file's ``training`` metadata holds (rank and alpha have header fields)."""
        return {s.key: getattr(self, s.key) for s in EXPERT_SETTINGS if s.in_training_metadata}

    def own_keys(self) -> list[str]:
        """The settings this expert's own table supplied, sorted (``per_expert`` in the metadata)."""
        return sorted(k for k, src in self.sources.items() if src.startswith("multistage."))


# What one expert trains with after its overrides: ``expert``, one field per EXPERT_SETTINGS row (the value),
# and ``sources`` (setting -> dotted key that supplied it).
ExpertPlan = make_dataclass(
    "ExpertPlan", [("expert", str), *((k, t) for k, t in _VALUE_TYPES.items()),
                   ("sources", dict[str, str])],
    bases=(_PlanViews,), frozen=True)
ExpertPlan.__module__ = __name__
ExpertPlan.__doc__ = "What one expert trains with after its overrides: the value and the key it came from."


def expert_plan(job: Job, expert: str) -> ExpertPlan:
    """The settings ``expert`` trains with: its ``[multistage.<expert>]`` value, else the job-wide one.

    A row with ``then`` (alpha) whose job-wide key is empty too takes that earlier row's value: the
    expert's own, else ``target.alpha``, else the expert's (possibly overridden) rank, so
    ``scale = alpha / rank`` stays 1 by default whatever rank an expert has.
    """
    own: ExpertSettings = getattr(job.multistage, expert)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in EXPERT_SETTINGS:
        section, _, key = s.falls_back_to.partition(".")
        mine, job_wide = getattr(own, s.key), getattr(getattr(job, section), key)
        if mine is not None:
            value, sources[s.key] = mine, f"multistage.{expert}.{s.key}"
        elif job_wide is None and s.then is not None:
            value, sources[s.key] = values[s.then], sources[s.then]
        else:
            value, sources[s.key] = job_wide, s.falls_back_to
        values[s.key] = _VALUE_TYPES[s.key](value)
    return ExpertPlan(expert=expert, sources=sources, **values)


def expand_shorthand(data: Any) -> Any:
    """A copy of a job dict with ``multistage.high_noise = true`` written as ``{train = true}`` (origins and
    layering compare tables key by key, so every layer must use the table form)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    ms = out.get("multistage")
    if isinstance(ms, dict):
        ms = dict(ms)
        for e in EXPERTS:
            if isinstance(ms.get(e), bool):
                ms[e] = {"train": ms[e]}
        out["multistage"] = ms
    return out


def compact_shorthand(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse for writing files: an expert table holding only ``train`` becomes ``high_noise = true``."""
    ms = data.get("multistage")
    if isinstance(ms, dict):
        for e in EXPERTS:
            v = ms.get(e)
            if isinstance(v, dict) and set(v) <= {"train"}:
                ms[e] = bool(v.get("train", True))
    return data


# The wizard's panel order: (TOML section, title).  DATASETS and SAMPLE hold lists.
PANELS: tuple[tuple[str, str], ...] = (
    ("job", "JOB"),
    ("model", "MODEL"),
    ("quantization", "QUANTIZATION"),
    ("multistage", "MULTISTAGE"),
    ("target", "TARGET"),
    ("save", "SAVE"),
    ("training", "TRAINING"),
    ("advanced", "ADVANCED"),
    ("datasets", "DATASETS"),
    ("sample", "SAMPLE"),
)


def section_model(name: str) -> type[Section]:
    """The pydantic model of a top-level section (``datasets`` → DatasetSection)."""
    ann = {"datasets": DatasetSection, "training.dop": DopSection, "sample.prompts": SamplePrompt}
    if name in ann:
        return ann[name]
    field = Job.model_fields[name]
    return field.annotation  # type: ignore[return-value]


def field_help(dotted: str) -> str:
    """Help text of ``section.key`` (list indices allowed: ``datasets[0].num_frames``)."""
    parts = re.sub(r"\[\d+\]", "", dotted).split(".")
    model: type[BaseModel] = Job
    for p in parts[:-1]:
        if p == "datasets":
            model = DatasetSection
        elif p == "prompts":
            model = SamplePrompt
        else:
            ann = model.model_fields[p].annotation
            model = ann  # type: ignore[assignment]
    f = model.model_fields.get(parts[-1])
    return (f.description or "") if f else ""


def all_keys(model: type[BaseModel] = Job, prefix: str = "") -> list[str]:
    """Every dotted key the schema knows (used for 'did you mean' suggestions)."""
    out: list[str] = []
    for name, f in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(all_keys(ann, key + "."))
        elif name == "datasets":
            out.extend(all_keys(DatasetSection, key + "."))
        elif name == "prompts":
            out.extend(all_keys(SamplePrompt, key + "."))
        else:
            out.append(key)
    return out
