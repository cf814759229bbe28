"""The model card (the Hub repo's README.md) uploaded with a finished job's LoRA pair.

What a person landing on the repo needs: what it is (a Wan 2.2 I2V A14B LoRA, one file per expert), the
trigger word, how to load the pair in ComfyUI and in diffusers, the previews the job rendered, and the
settings it was trained with.  Local paths never reach the card (a dataset folder or a ComfyUI install
says more about the machine than about the LoRA): they are cut to their last component.
Pure text from a ``Job``; no I/O, no huggingface_hub, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from wanlora.engine.config.experts import HIGH, LOW
from wanlora.engine.config.schema import EXPERTS, Job, expert_plan, hub_repo_problem

OFFICIAL_BASE = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
EXPERT_WORDS = {
    HIGH: ("high-noise", "composition, motion, camera", "transformer"),
    LOW: ("low-noise", "detail, identity, texture", "transformer_2"),
}
# keys whose values are paths on the training machine: only the last component is shown
PATH_KEYS = re.compile(r"^(job\.output_dir|model\.name_or_path|model\.\w+_file|quantization\.recovery_adapter|datasets\[\d+\]\.folder|"
                       r"sample\.prompts\[\d+\]\.ctrl_img|sample\.accelerator_lora(\[\d+\])?)$")


@dataclass(frozen=True)
class Preview:
    """One rendered preview as it lies in the repo (``png`` = its first frame, shown inline)."""

    video: str | None
    png: str | None
    prompt: str
    step: int


def hub_base_model(name_or_path: str) -> str | None:
    """``name_or_path`` as a Hub model id (revision dropped), or None for a local folder."""
    repo = name_or_path.split("@", 1)[0].strip()
    if not repo or name_or_path.startswith(("/", ".", "~")) or hub_repo_problem(repo):
        return None
    return repo


def redact(dotted: str, value: Any) -> Any:
    """A path-valued setting cut to its file or folder name; other values unchanged."""
    if isinstance(value, str) and value and PATH_KEYS.match(dotted):
        return _tail(value)
    if isinstance(value, list) and PATH_KEYS.match(dotted):
        return [_tail(v) if isinstance(v, str) and v else v for v in value]
    return value


def _tail(value: str) -> str:
    if hub_base_model(value) and not value.startswith(("/", ".", "~")) and value.count("/") == 1:
        return value  # a Hub id (e.g. an accelerator LoRA repo) is public already
    return PurePath(value).name or value


def _md(text: str) -> str:
    """Plain text for a markdown table cell or a line: no pipes or newlines breaking the layout."""
    return " ".join(str(text).replace("|", "\\|").split())


def render_card(job: Job, *, repo: str, files: dict[str, str], previews: list[Preview] | None = None,
                final_step: int | None = None) -> str:
    """README.md for ``repo``: ``files`` maps each trained expert to its file name in the repo."""
    name = job.job.name
    trigger = job.job.trigger_word.strip()
    base = hub_base_model(job.model.name_or_path)
    own_files = [k for k in ("high_noise_file", "low_noise_file") if getattr(job.model, k)]
    previews = previews or []
    front = ["---"]
    if base and not own_files:
        front += [f"base_model: {base}", "base_model_relation: adapter"]
    front += ["library_name: diffusers", "pipeline_tag: image-to-video", "tags:", "- lora", "- wan2.2",
              "- image-to-video", "- wanlora"]
    if trigger:
        front.append(f"instance_prompt: {_yaml_str(trigger)}")
    front.append("---")

    steps = final_step if final_step is not None else job.training.steps
    trained = [e for e in EXPERTS if e in files]
    out = front + ["", f"# {name}", "",
                   f"A LoRA for **Wan 2.2 image-to-video (A14B)**, trained with wanlora for {steps} steps"
                   + (f" from the {job.job.preset} recipe" if job.job.preset != "custom" else "") + ". Wan 2.2 I2V "
                   "denoises with two experts, so the LoRA is a pair: one file per expert"
                   + ("" if len(trained) == 2 else f" (only the {EXPERT_WORDS[trained[0]][0]} expert was trained)"
                      if trained else "") + ".", ""]
    out += ["## Trigger word", ""]
    out += ([f"`{trigger}` — put it in your prompt.", ""] if trigger
            else ["None: the LoRA acts on every prompt.", ""])
    out += ["## Files", "", "| file | expert | what it shapes |", "| --- | --- | --- |"]
    for e in trained:
        words, what, _ = EXPERT_WORDS[e]
        out.append(f"| `{files[e]}` | {words} | {what} |")
    out += ["", "## ComfyUI", "",
            f"Download {'both files' if len(trained) == 2 else 'the file'} into `ComfyUI/models/loras/`. A Wan 2.2 "
            "I2V workflow loads two diffusion models "
            "(high noise and low noise); put one *LoraLoaderModelOnly* after each:"
            + "".join(f" the `{files[e]}` file on the {EXPERT_WORDS[e][0]} model;" for e in trained)
            + " strength 1.0 to start.", ""]
    out += ["## diffusers", "", "```python", "import torch", "from diffusers import WanImageToVideoPipeline", "",
            f'pipe = WanImageToVideoPipeline.from_pretrained("{base or OFFICIAL_BASE}", torch_dtype=torch.bfloat16)']
    for e in trained:
        into = ", load_into_transformer_2=True" if e == LOW else ""
        adapter = "high" if e == HIGH else "low"
        out.append(f'pipe.load_lora_weights("{repo}", weight_name="{files[e]}", adapter_name="{adapter}"{into})')
    out += ["```", ""]
    if job.save.push_private:
        out += ["The repo was created private: log in first (`hf auth login`) or pass `token=` to "
                "`load_lora_weights`.", ""]
    if previews:
        out += ["## Previews", "", f"Rendered by the job at step {previews[0].step} "
                f"({job.sample.width}x{job.sample.height}, {job.sample.num_frames} frames, "
                f"{job.sample.steps} denoising steps).", ""]
        for p in previews:
            prompt = _md(p.prompt) or "(no prompt)"
            if p.png:
                out.append(f"![{prompt}]({p.png})")
            link = f" — [video]({p.video})" if p.video else ""
            out += [f"*{prompt}*{link}", ""]
    out += ["## Training settings", "", "| setting | value |", "| --- | --- |"]
    out += [f"| {k} | {_md(v)} |" for k, v in settings_rows(job)]
    out += ["", "<details><summary>The whole job file (local paths cut to their last part)</summary>", "",
            "```toml", job_toml(job).rstrip(), "```", "", "</details>", ""]
    return "\n".join(out)


def settings_rows(job: Job) -> list[tuple[str, str]]:
    """The settings that decide what the LoRA learned, in the order a reader compares them."""
    t, m = job.training, job.model
    rows = [("base model", hub_base_model(m.name_or_path) or f"local folder `{_tail(m.name_or_path)}`"
             + " (Wan 2.2 I2V A14B)")]
    for k in ("high_noise_file", "low_noise_file"):
        if getattr(m, k):
            rows.append((k.replace("_", " "), f"`{_tail(getattr(m, k))}`"))
    rows += [("steps", str(t.steps)), ("experts trained", ", ".join(job.multistage.trained()) or "none"),
             ("switch every", f"{job.multistage.switch_every} steps")]
    for e in job.multistage.trained():
        p = expert_plan(job, e)
        rows.append((f"{e} expert", f"lr {p.learning_rate:g}, rank {p.rank}, alpha {p.alpha:g}, timesteps "
                                    f"{p.timestep_type}/{p.timestep_bias}, weight decay {p.weight_decay:g}"))
    rows += [("LoRA modules", job.target.modules), ("optimizer", f"{t.optimizer}, {t.lr_scheduler} schedule"
             + (f", {t.lr_warmup_steps} warm-up steps" if t.lr_warmup_steps else "")),
             ("batch", f"{t.batch_size} × {t.gradient_accumulation} accumulation"),
             ("max grad norm", f"{t.max_grad_norm:g}"),
             ("quantization", f"experts {job.quantization.transformer}, text encoder {job.quantization.text_encoder}"),
             ("saved as", job.save.dtype), ("seed", str(t.seed))]
    if t.ema:
        rows.append(("EMA", f"decay {t.ema_decay:g} (the files hold the EMA weights)"))
    if t.dop.enabled:
        rows.append(("DOP", f"class {t.dop.preservation_class!r}, multiplier {t.dop.multiplier:g}"))
    if job.advanced.differential_guidance:
        rows.append(("differential guidance", f"scale {job.advanced.differential_guidance_scale:g}"))
    for i, d in enumerate(job.datasets):
        kind = "regularization" if d.is_regularization else "held out for eval" if d.is_eval else "training"
        rows.append((f"dataset {i + 1}", f"{kind}, {d.num_frames} frames ({d.frame_sampling}), resolutions "
                                          f"{'/'.join(map(str, d.resolutions))}, caption dropout {d.caption_dropout:g}"
                                          + (", flip x" if d.flip_x else "") + (f", weight {d.weight:g}"
                                                                                 if d.weight != 1 else "")))
    return rows


def job_toml(job: Job) -> str:
    """The job file as trained, with path values cut to their last part (see :data:`PATH_KEYS`)."""
    import tomli_w
    from wanlora.engine.config.io import job_to_dict

    def walk(prefix: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(f"{prefix}.{k}" if prefix else k, v) for k, v in value.items()}
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return [walk(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
        return redact(prefix, value)

    return tomli_w.dumps(walk("", job_to_dict(job)))


def _yaml_str(s: str) -> str:
    """A YAML scalar that stays a string whatever the trigger word looks like (``yes``, ``1.0``, ``a: b``)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
