"""Previews: image-to-video samples through the stock ``WanImageToVideoPipeline`` with both experts + LoRA.

The preview is what a user gets in diffusers: the real pipeline (boundary from the model, the
high-noise expert with ``guidance_scale``, the low-noise one with ``guidance_scale_2``), the current LoRAs
— in memory during training (the peft adapters already sit in the experts; with EMA the EMA weights
are swapped in for the preview), from files for ``wanlora sample`` (``load_lora_weights`` into
``transformer`` / ``transformer_2``) — every prompt's ``ctrl_img`` (scaled to cover, centre-cropped),
seed / walk_seed (prompt i gets seed + i).  Prompts are embedded by the trainer's own embedder, so
previews work when the text encoder was freed by the text cache.  Written as ``<step>_<i>.mp4``
(H.264, ``[sample].fps``) + ``<step>_<i>.png`` (first frame), each atomically.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from wanlora.engine.config.experts import HIGH, LOW


@dataclass(frozen=True)
class PreviewSpec:
    prompt: str
    image: Path
    seed: int
    negative: str
    width: int
    height: int
    num_frames: int
    steps: int
    guidance_scale: float
    guidance_scale_2: float
    fps: int
    accelerated: bool = False  # a step-distilled LoRA ran on top (sample.accelerator_lora)


def preview_specs(sample: Any, trigger_word: str = "", accelerated: bool = False) -> list[PreviewSpec]:
    """One spec per ``[[sample.prompts]]`` row: trigger substituted, seed walked, negative defaulted.

    ``accelerated``: the step-distilled LoRA runs, so its own steps and CFG scale apply.
    """
    from wanlora.engine.data.captions import substitute_trigger

    steps = sample.accelerator_steps if accelerated else sample.steps
    cfg = sample.accelerator_guidance_scale if accelerated else sample.guidance_scale
    out = []
    for i, p in enumerate(sample.prompts):
        seed = p.seed if p.seed is not None else sample.seed + (i if sample.walk_seed else 0)
        out.append(PreviewSpec(
            prompt=substitute_trigger(p.prompt, trigger_word), image=Path(p.ctrl_img).expanduser(), seed=int(seed),
            negative=p.neg or sample.negative_prompt, width=sample.width, height=sample.height,
            num_frames=sample.num_frames, steps=steps, guidance_scale=cfg,
            guidance_scale_2=cfg, fps=sample.fps, accelerated=accelerated))
    return out


ACCEL_ADAPTER = "accelerator"


def attach_accelerator(models: dict[str, Any], files: dict[str, Path]) -> None:
    """Load a step-distilled LoRA (``files``: expert → file) into each expert as a second adapter, both on.

    diffusers reads the file (ComfyUI / LightX2V / diffusers key formats alike); our trained adapter keeps
    running underneath.  :func:`detach_accelerator` removes it again, leaving the trained adapter active.
    """
    from diffusers import WanImageToVideoPipeline
    from wanlora.engine.model.lora import compute_in_input_dtype

    for name, model in models.items():
        sd = WanImageToVideoPipeline.lora_state_dict(str(files[name]))
        WanImageToVideoPipeline.load_lora_into_transformer(sd, transformer=model, adapter_name=ACCEL_ADAPTER)
        compute_in_input_dtype(model)  # the trained adapter's layers pass their input on uncast: so must this one
        names = list(getattr(model, "peft_config", {}))
        model.set_adapters(names, weights=[1.0] * len(names))


def detach_accelerator(models: dict[str, Any]) -> None:
    """Remove the accelerator adapter; the trained adapter (if any) is the active one again."""
    from wanlora.engine.model.lora import ADAPTER_NAME

    for model in models.values():
        if ACCEL_ADAPTER in getattr(model, "peft_config", {}):
            model.delete_adapters(ACCEL_ADAPTER)
            if ADAPTER_NAME in model.peft_config:
                model.set_adapter(ADAPTER_NAME)


def accelerator_for(sample: Any) -> dict[str, Path] | None:
    """The accelerator pair ``sample.accelerator_lora`` names, or None when the key is unset."""
    from wanlora.engine.config.accelerator import accelerator_files, is_set

    return accelerator_files(sample.accelerator_lora) if is_set(sample.accelerator_lora) else None


def load_ctrl_image(path: Path, width: int, height: int):
    """The control image scaled to cover ``width × height`` and centre-cropped (no distortion): a PIL image."""
    from PIL import Image
    from wanlora.engine.data.buckets import crop_plan

    img = Image.open(path).convert("RGB")
    plan = crop_plan(img.width, img.height, width, height)
    img = img.resize((plan.resize_w, plan.resize_h), Image.Resampling.BICUBIC)
    return img.crop((plan.left, plan.top, plan.left + width, plan.top + height))


def make_scheduler(kind: str, root: Path):
    """``unipc``: the model's own scheduler; ``flowmatch``: Euler flow matching with the model's shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    unipc = UniPCMultistepScheduler.from_pretrained(root, subfolder="scheduler")
    if kind == "unipc":
        return unipc
    shift = float(unipc.config.get("flow_shift", 5.0) or 5.0)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Pipeline output (floats in [0, 1], ``[F,H,W,3]``) → uint8."""
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _encode_imageio(frames: Iterable[np.ndarray], path: Path, fps: int) -> None:
    import imageio.v2 as imageio

    with imageio.get_writer(str(path), fps=fps, codec="libx264", quality=8, pixelformat="yuv420p",
                            macro_block_size=16, ffmpeg_log_level="error") as w:
        for f in frames:
            w.append_data(f)


def _encode_pyav(frames: Iterable[np.ndarray], path: Path, fps: int) -> None:
    """``frames`` may be a generator (``compare``'s grid is one): the first frame gives the size."""
    import itertools

    import av

    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"no frames to write to {path.name}")
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2
        stream.pix_fmt = "yuv420p"
        for f in itertools.chain([first], it):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f[: stream.height, : stream.width], format="rgb24")))
        out.mux(stream.encode())


def write_mp4(frames: Iterable[np.ndarray], path: Path, fps: int) -> Path:
    """H.264 yuv420p mp4 (plays everywhere), written to a temp name then renamed; ``frames`` is an
    ``[F, H, W, 3]`` uint8 array or any iterable of ``[H, W, 3]`` frames.

    imageio-ffmpeg's bundled ffmpeg first; PyAV (already a dependency for reading) where that binary is
    missing, e.g. on a GPU box where only wheels could be installed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        try:
            import imageio_ffmpeg  # noqa: F401

            _encode_imageio(frames, tmp, fps)
        except ImportError:
            _encode_pyav(frames, tmp, fps)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_png(frame: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    Image.fromarray(frame).save(tmp)
    os.replace(tmp, path)
    return path


Place = Callable[[str], None]  # low_vram: only this expert's weights on the GPU, the other's in host memory


def module_placer(pipe, device: torch.device) -> Place:
    """Placement by ``Module.to`` (both ways through pageable memory): for pipelines of loaded files."""
    def place(name: str) -> None:
        out, into = (pipe.transformer_2, pipe.transformer) if name == HIGH else (pipe.transformer, pipe.transformer_2)
        out.to("cpu")
        torch.cuda.empty_cache()
        into.to(device)
    return place


def _swap_on_boundary(device: torch.device, place: Place) -> Callable:
    """low_vram: a step-end callback that moves the high expert out and the low one in at the boundary."""
    def cb(pipe, i: int, t, kwargs: dict) -> dict:
        ts = pipe.scheduler.timesteps
        boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
        if i + 1 < len(ts) and ts[i + 1] < boundary and next(pipe.transformer_2.parameters()).device != device:
            place(LOW)
        return {}
    return cb


def render(pipe, specs: list[PreviewSpec], out_dir: Path, step: int, *,
           embed: Callable[[list[str]], torch.Tensor] | None = None, low_vram: bool = False,
           on_file: Callable[[int, PreviewSpec, Path, Path], None] | None = None,
           place: Place | None = None) -> list[Path]:
    """Run every spec through ``pipe`` and write ``<step>_<i>.mp4`` + ``.png``; returns the mp4 paths.

    ``low_vram``: one expert on the GPU at a time, moved by ``place`` (default :func:`module_placer`)."""
    device = pipe._execution_device
    place = place or module_placer(pipe, device)
    written = []
    for i, s in enumerate(specs):
        kw: dict[str, Any] = {}
        if embed is not None:
            kw["prompt_embeds"] = embed([s.prompt])
            kw["negative_prompt_embeds"] = embed([s.negative])
        else:
            kw["prompt"], kw["negative_prompt"] = s.prompt, s.negative
        if low_vram and device.type == "cuda":
            place(HIGH)
            kw["callback_on_step_end"] = _swap_on_boundary(device, place)
        gen = torch.Generator("cpu").manual_seed(s.seed)
        image = load_ctrl_image(s.image, s.width, s.height)
        frames = pipe(image=image, height=s.height, width=s.width, num_frames=s.num_frames,
                      num_inference_steps=s.steps, guidance_scale=s.guidance_scale,
                      guidance_scale_2=s.guidance_scale_2, generator=gen, output_type="np", **kw).frames[0]
        frames = to_uint8(frames)
        mp4 = write_mp4(frames, Path(out_dir) / f"{step:06d}_{i}.mp4", s.fps)
        png = write_png(frames[0], Path(out_dir) / f"{step:06d}_{i}.png")
        written.append(mp4)
        if on_file:
            on_file(i, s, mp4, png)
    return written


def build_pipeline(root: Path, *, high, low, vae, scheduler, boundary_ratio: float, tokenizer=None,
                   text_encoder=None):
    """A stock pipeline object around components that are already loaded (nothing is copied)."""
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                                   image_processor=None, image_encoder=None, transformer=high, transformer_2=low,
                                   boundary_ratio=boundary_ratio)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_untrained_experts(models: dict[str, Any], parts: Any, dtype: torch.dtype,
                            device: torch.device) -> list[str]:
    """A preview needs both experts: the untrained one comes from the model (base weights), dropped after."""
    loaded: list[str] = []
    for n in (HIGH, LOW):
        if n not in models:
            models[n] = parts.expert(n, dtype, device)
            loaded.append(n)
    return loaded


def _sample_emitter(emit: Callable[..., Any] | None, step: int) -> Callable[[int, PreviewSpec, Path, Path], None]:
    """Each written preview becomes a ``sample`` event (when someone listens)."""

    def on_file(i: int, s: PreviewSpec, mp4: Path, png: Path) -> None:
        if emit:
            emit("sample", step=step, index=i, path=str(mp4), png=str(png), prompt=s.prompt, seed=s.seed,
                 frames=s.num_frames, width=s.width, height=s.height, accelerated=s.accelerated,
                 steps=s.steps)

    return on_file


def _parking_placer(experts: dict[str, Any], models: dict[str, Any], device: torch.device) -> Place:
    """low_vram previews of a training run: trained experts move through their parking (nothing is copied back
    to the host), an expert loaded only for the preview by ``Module.to``."""
    def move(name: str, to_gpu: bool) -> None:
        parking = getattr(experts.get(name), "parking", None)
        if parking is not None:
            parking.unpark(device) if to_gpu else parking.park()
        else:
            models[name].to(device if to_gpu else "cpu")

    def place(name: str) -> None:
        for other in models:
            if other != name:
                move(other, False)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the leaving expert's blocks go back before the other one comes in
        move(name, True)
    return place


def _restore_experts(models: dict[str, Any], loaded: list[str], modes: dict[str, bool],
                     placement: dict[str, torch.device], place: Place | None) -> None:
    """Training goes on as before: each trained expert back in its mode and on its device (``place``: the one
    that was on the GPU goes back there through it)."""
    on_gpu = [n for n in models if n not in loaded and placement[n].type != "cpu"]
    if place is not None and len(on_gpu) == 1:
        place(on_gpu[0])
    for n, m in models.items():
        if n in loaded:
            continue
        m.train(modes[n])
        if next(m.parameters()).device != placement[n]:
            m.to(placement[n])


def training_previews(*, job: Any, parts: Any, experts: dict[str, Any], embed: Callable[[list[str]], torch.Tensor],
                      out_dir: Path, step: int, device: torch.device, dtype: torch.dtype,
                      emas: dict[str, Any] | None = None, emit: Callable[..., Any] | None = None) -> list[Path]:
    """Previews in the middle of training; every expert's mode and device are restored afterwards.

    An expert that is not trained is loaded from the model for the preview (base weights, no LoRA) and
    dropped after; a VAE freed by the latent cache is loaded back for the preview and dropped after.
    """
    from wanlora.engine.cache.text import Embedder

    accel = accelerator_for(job.sample)
    specs = preview_specs(job.sample, job.job.trigger_word, accelerated=accel is not None)
    if not specs:
        return []
    if isinstance(embed, Embedder):  # prompts as written: unload_text_encoder maps only training captions
        embed = embed.verbatim
    models = {n: ex.model for n, ex in experts.items()}
    loaded = _load_untrained_experts(models, parts, dtype, device)
    vae = parts.vae if parts.vae is not None else parts.fresh_vae(torch.float32, device)
    low_vram = bool(job.model.low_vram) and device.type == "cuda"
    # low_vram: the condition video's encode and the decode run in tiles (a 768²×41 fp32 decode in one piece ran
    # a 24 GB card out of memory next to the expert); tiles blend at their seams, fine for a preview
    tiled = low_vram and hasattr(vae, "enable_tiling") and not getattr(vae, "use_tiling", False)
    if tiled:
        vae.enable_tiling()
    placement = {n: next(m.parameters()).device for n, m in models.items()}
    modes = {n: m.training for n, m in models.items()}
    place = _parking_placer(experts, models, device) if low_vram else None
    try:
        if not low_vram:
            for m in models.values():
                m.to(device)
        for m in models.values():
            m.eval()
        pipe = build_pipeline(parts.root, high=models[HIGH], low=models[LOW], vae=vae,
                              scheduler=make_scheduler(job.sample.sampler, parts.root),
                              boundary_ratio=parts.boundary_ratio)
        on_file = _sample_emitter(emit, step)
        with ExitStack() as stack, torch.no_grad():
            for ema in (emas or {}).values():
                stack.enter_context(ema.applied())
            if accel is not None:  # inference only: removed again before training goes on
                stack.callback(detach_accelerator, models)
                attach_accelerator(models, accel)
            return render(pipe, specs, out_dir, step, embed=embed, low_vram=low_vram, on_file=on_file, place=place)
    finally:
        _restore_experts(models, loaded, modes, placement, place)
        if tiled:
            vae.disable_tiling()
        del models
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def lora_expert(path: Path) -> str | None:
    """The expert a LoRA file says it belongs to (our metadata), else None."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("expert")


def sample_from_files(loras: list[Path], *, model: str | None, image: Path, prompt: str, out_dir: Path,
                      negative: str = "", frames: int = 41, steps: int = 25, guidance: float = 3.5,
                      guidance_2: float | None = None, seed: int = 42, width: int = 768, height: int = 768,
                      fps: int = 16, sampler: str = "unipc", device: torch.device | None = None,
                      low_vram: bool = False, on_file: Callable[..., None] | None = None,
                      progress: bool = False) -> list[Path]:
    """``wanlora sample``: the base model + one or two LoRA files (high first, or told by their metadata).

    ``progress`` shows the pipeline's denoising bar (stderr): a CPU preview takes minutes, not seconds.
    """
    from diffusers import WanImageToVideoPipeline
    from wanlora.engine.model.folder import resolve_model_path

    device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    by_expert: dict[str, Path] = {}
    for i, p in enumerate(loras):
        by_expert[lora_expert(p) or (HIGH if i == 0 else LOW)] = Path(p)
    if model is None:
        from safetensors import safe_open

        with safe_open(str(loras[0]), framework="pt") as f:
            model = (f.metadata() or {}).get("base_model") or "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
    root = resolve_model_path(model, ["transformer", "transformer_2", "vae", "text_encoder", "tokenizer"])
    pipe = WanImageToVideoPipeline.from_pretrained(root, dtype=dtype)
    pipe.vae.to(torch.float32)
    pipe.scheduler = make_scheduler(sampler, root)
    pipe.set_progress_bar_config(disable=not progress, desc="denoising", leave=False)
    if HIGH in by_expert:
        pipe.load_lora_weights(str(by_expert[HIGH]), adapter_name="high")
    if LOW in by_expert:
        pipe.load_lora_weights(str(by_expert[LOW]), adapter_name="low", load_into_transformer_2=True)
    pipe.to(device)
    if low_vram and device.type == "cuda":
        pipe.text_encoder.to("cpu")
    spec = PreviewSpec(prompt=prompt, image=Path(image), seed=seed, negative=negative, width=width, height=height,
                       num_frames=frames, steps=steps, guidance_scale=guidance,
                       guidance_scale_2=guidance if guidance_2 is None else guidance_2, fps=fps)
    with torch.no_grad():
        return render(pipe, [spec], out_dir, int(_step_of(by_expert)), low_vram=low_vram, on_file=on_file)


def _step_of(by_expert: dict[str, Path]) -> int:
    from safetensors import safe_open

    for p in by_expert.values():
        with safe_open(str(p), framework="pt") as f:
            s = (f.metadata() or {}).get("step")
        if s and s.isdigit():
            return int(s)
    return 0
