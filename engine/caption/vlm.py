"""The video language model that writes captions: Qwen2.5-VL (default) or Qwen3-VL through transformers.

Two ways in, the same model and prompt:

- ``processor`` (used whenever torchvision is installed, as on GPU hosts): the checkpoint's own
  ``AutoProcessor`` and chat template; the frames go in as one video array with their metadata (total
  frames, real fps, which indices were taken, ``do_sample_frames=False``), so the processor computes the
  temporal position of each frame pair (``second_per_grid_ts`` for Qwen2.5-VL, timestamps for Qwen3-VL).
- ``builtin`` (no torchvision: transformers' Qwen video processor imports it, and CPU-only torch has no
  matching torchvision wheel): Qwen2/2.5-VL only.  The same tensors are built here with numpy — normalise
  with the checkpoint's mean/std, cut into 14-pixel patches in Qwen's order, one ``<|video_pad|>`` per
  merged patch, ``second_per_grid_ts = temporal_patch_size / sampled fps`` — and the chat text is Qwen's
  ChatML.  ``tests/engine/caption/test_gpu_caption.py`` checks on a GPU host that both give the same input ids
  and pixels.

4-bit (bitsandbytes NF4) is used on small cards: ``quant="auto"`` picks it when the GPU has less free
memory than the bf16 weights need plus room for the video tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from wanlora.engine.caption.prompts import SYSTEM
from wanlora.engine.caption.sampling import MAX_PIXELS, MIN_PIXELS, Frames

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
MAX_NEW_TOKENS = 80
Backend = Literal["auto", "processor", "builtin"]
Quant = Literal["auto", "none", "4bit"]

# model_type in config.json → the transformers class that generates with it
MODEL_CLASSES = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
}
BUILTIN_TYPES = ("qwen2_5_vl", "qwen2_vl")  # the ones whose video input the builtin path reproduces
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # Qwen-VL's defaults when a checkpoint does not say
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEADROOM_GB = 6.0  # activations + KV cache for ~4k video tokens on a 7B, measured order of magnitude


class CaptionModelError(Exception):
    """The captioning model cannot be loaded or run; the message names the model and the fix."""


@dataclass(frozen=True)
class VisionLayout:
    """How the vision encoder cuts frames into tokens (from the checkpoint's preprocessor config)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


def read_layout(folder: Path) -> VisionLayout:
    """The layout from ``video_preprocessor_config.json`` / ``preprocessor_config.json`` (defaults otherwise)."""
    data: dict[str, Any] = {}
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        p = folder / name
        if p.is_file():
            data.update(json.loads(p.read_text(encoding="utf-8")))
    return VisionLayout(
        patch_size=int(data.get("patch_size", 14)),
        temporal_patch_size=int(data.get("temporal_patch_size", 2)),
        merge_size=int(data.get("merge_size", 2)),
        mean=tuple(data.get("image_mean", CLIP_MEAN)),  # type: ignore[arg-type]
        std=tuple(data.get("image_std", CLIP_STD)),  # type: ignore[arg-type]
    )


def patchify(pixels: np.ndarray, layout: VisionLayout) -> tuple[np.ndarray, tuple[int, int, int]]:
    """uint8 RGB frames [F, H, W, 3] → (flat patches [t·h·w, 3·tp·p·p] float32, grid (t, h, w)).

    Normalised with the layout's mean/std; F padded to a multiple of the temporal patch by repeating the last
    frame; patches ordered as Qwen's vision encoder reads them (merge windows of ``merge_size²`` adjacent).
    """
    f, hgt, wid, _ = pixels.shape
    p, tp, m = layout.patch_size, layout.temporal_patch_size, layout.merge_size
    if hgt % (p * m) or wid % (p * m):
        raise ValueError(f"frame size {wid}x{hgt} is not a multiple of {p * m} (use sampling.frame_size)")
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.asarray(layout.mean, np.float32)) / np.asarray(layout.std, np.float32)
    x = x.transpose(0, 3, 1, 2)  # F, C, H, W
    if pad := -f % tp:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    t, gh, gw = x.shape[0] // tp, hgt // p, wid // p
    x = x.reshape(t, tp, 3, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(x.reshape(t * gh * gw, 3 * tp * p * p)), (t, gh, gw)


def chat_text(prompt: str, pad_token: str, n_pad: int) -> str:
    """Qwen's ChatML for one system + one user turn holding one video (or image), ready for the answer."""
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
            f"<|vision_start|>{pad_token * n_pad}<|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n")


def messages(prompt: str, kind: str) -> list[dict[str, Any]]:
    """The same conversation as :func:`chat_text`, for a processor's chat template."""
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
            {"role": "user", "content": [{"type": kind}, {"type": "text", "text": prompt}]}]


def torchvision_available() -> bool:
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


def _free_gb(device: str) -> float | None:
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return free / 2**30


def weights_gb(config: Any) -> float:
    """bf16 weight size from a config (text + vision), for the 4-bit decision before anything is loaded."""
    t = getattr(config, "text_config", config)
    v = getattr(config, "vision_config", None)
    h, layers, inter = t.hidden_size, t.num_hidden_layers, t.intermediate_size
    kv = h // t.num_attention_heads * t.num_key_value_heads
    text = layers * (2 * h * h + 2 * h * kv + 3 * h * inter) + 2 * t.vocab_size * h
    vis = 0
    if v is not None:
        vh = v.hidden_size
        vis = v.depth * (4 * vh * vh + 3 * vh * v.intermediate_size)
    return 2 * (text + vis) / 2**30


class Captioner:
    """One loaded VLM; :meth:`caption` turns one clip's frames and an instruction into raw text."""

    def __init__(self, model: Any, tokenizer: Any, processor: Any | None, layout: VisionLayout, model_type: str,
                 device: str, name: str, quantized: bool = False, max_new_tokens: int = MAX_NEW_TOKENS,
                 max_pixels: int = MAX_PIXELS) -> None:
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.layout, self.model_type, self.device, self.name = layout, model_type, device, name
        self.quantized, self.max_new_tokens, self.max_pixels = quantized, max_new_tokens, max_pixels

    @property
    def backend(self) -> str:
        return "processor" if self.processor is not None else "builtin"

    # ------------------------------------------------------------------ inputs
    def inputs(self, frames: Frames, prompt: str) -> dict[str, Any]:
        """Model inputs (torch tensors on the model's device) for one clip or image."""
        batch = self._processor_inputs(frames, prompt) if self.processor is not None else \
            self._builtin_inputs(frames, prompt)
        return {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in batch.items()}

    def _processor_inputs(self, frames: Frames, prompt: str) -> dict[str, Any]:
        text = self.processor.apply_chat_template(messages(prompt, frames.kind), tokenize=False,
                                                  add_generation_prompt=True)
        size = {"shortest_edge": MIN_PIXELS, "longest_edge": self.max_pixels}
        if frames.kind == "image":
            return dict(self.processor(text=[text], images=[frames.pixels[0]], size=size, return_tensors="pt"))
        h, w = frames.pixels.shape[1:3]
        meta = {"total_num_frames": frames.source_frames, "fps": frames.source_fps,
                "duration": frames.source_frames / frames.source_fps if frames.source_fps else None,
                "frames_indices": list(frames.indices), "width": int(w), "height": int(h)}
        return dict(self.processor(text=[text], videos=[frames.pixels], video_metadata=[meta], do_sample_frames=False,
                                   size=size, return_tensors="pt"))

    def _builtin_inputs(self, frames: Frames, prompt: str) -> dict[str, Any]:
        import torch

        lay = self.layout
        flat, grid = patchify(frames.pixels if frames.kind == "video" else frames.pixels[:1].repeat(
            lay.temporal_patch_size, axis=0), lay)
        n_pad = grid[0] * grid[1] * grid[2] // lay.merge_size**2
        pad = "<|video_pad|>" if frames.kind == "video" else "<|image_pad|>"
        ids = self.tokenizer(chat_text(prompt, pad, n_pad), return_tensors="pt", add_special_tokens=False)
        input_ids = ids["input_ids"]
        pad_id = self.tokenizer.convert_tokens_to_ids(pad)
        out: dict[str, Any] = {"input_ids": input_ids, "attention_mask": ids["attention_mask"],
                               "mm_token_type_ids": (input_ids == pad_id).to(torch.int32) * (2 if frames.kind == "video" else 1)}
        pixels = torch.from_numpy(flat)
        g = torch.tensor([grid], dtype=torch.long)
        if frames.kind == "video":
            out.update(pixel_values_videos=pixels, video_grid_thw=g,
                       second_per_grid_ts=torch.tensor([lay.temporal_patch_size / frames.sampled_fps]))
        else:
            out.update(pixel_values=pixels, image_grid_thw=g)
        return out

    # ------------------------------------------------------------------ generation
    def caption(self, frames: Frames, prompt: str) -> str:
        """The model's answer for one clip (greedy decoding: the same clip gives the same caption)."""
        import torch

        batch = self.inputs(frames, prompt)
        for k in ("pixel_values", "pixel_values_videos"):
            if k in batch:
                batch[k] = batch[k].to(self.model.dtype if not self.quantized else torch.bfloat16)
        n_in = batch["input_ids"].shape[1]
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, n_in:], skip_special_tokens=True).strip()


def _model_class(model_type: str, name: str) -> Any:
    import transformers

    cls_name = MODEL_CLASSES.get(model_type)
    if cls_name is None:
        raise CaptionModelError(f"{name} is a {model_type!r} model; wanlora caption runs Qwen2.5-VL or Qwen3-VL "
                                f"checkpoints (--model Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen3-VL-8B-Instruct or a "
                                "folder holding one)")
    cls = getattr(transformers, cls_name, None)
    if cls is None:
        raise CaptionModelError(f"transformers {transformers.__version__} has no {cls_name} (needed for {name}); "
                                "upgrade it: pip install -U transformers")
    return cls


def choose_quant(quant: Quant, config: Any, device: str) -> bool:
    """Whether to load in 4-bit: ``auto`` = on a GPU whose free memory is below bf16 weights + headroom."""
    if quant == "4bit":
        if not device.startswith("cuda"):
            raise CaptionModelError("--quant 4bit needs a CUDA GPU (bitsandbytes); on a CPU use --quant none")
        return True
    if quant == "none" or not device.startswith("cuda"):
        return False
    free = _free_gb(device)
    return free is not None and free < weights_gb(config) + HEADROOM_GB


def load_captioner(model: str = DEFAULT_MODEL, *, device: str | None = None, quant: Quant = "auto",
                   backend: Backend = "auto", max_new_tokens: int = MAX_NEW_TOKENS,
                   max_pixels: int = MAX_PIXELS) -> Captioner:
    """Load a Qwen-VL checkpoint (hub id or local folder) for captioning.

    Raises :class:`CaptionModelError` with the fix for a model that is not a Qwen-VL, a transformers without
    its class, a missing bitsandbytes for 4-bit, or a checkpoint that cannot be found/downloaded.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise CaptionModelError(f"cannot load the captioning model {model!r} ({str(e).splitlines()[0][:200]}); pass "
                                "--model with a local folder or a hub id this machine can download (HF_TOKEN for "
                                "gated ones)") from None
    model_type = str(getattr(config, "model_type", ""))
    cls = _model_class(model_type, model)
    use_processor = backend == "processor" or (backend == "auto" and torchvision_available())
    if not use_processor and model_type not in BUILTIN_TYPES:
        raise CaptionModelError(f"{model} ({model_type}) needs transformers' video processor, which needs torchvision: "
                                "pip install torchvision (the build matching your torch)")
    four_bit = choose_quant(quant, config, device)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if device.startswith("cuda") else torch.float32}
    if four_bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise CaptionModelError("4-bit captioning needs bitsandbytes: pip install 'wanlora[cuda]' "
                                    "(or pass --quant none on a card with room for bf16 weights)") from None
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": device}
    t0 = time.monotonic()
    try:
        vlm = cls.from_pretrained(model, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(model)
        processor = None
        if use_processor:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise CaptionModelError(f"cannot load the captioning model {model!r} ({str(e).splitlines()[0][:200]})") from None
    if not four_bit:
        vlm = vlm.to(device)
    vlm.eval()
    layout = read_layout(Path(model)) if Path(model).is_dir() else _hub_layout(model)
    cap = Captioner(vlm, tokenizer, processor, layout, model_type, device, model, four_bit, max_new_tokens, max_pixels)
    cap.load_s = time.monotonic() - t0  # type: ignore[attr-defined]
    return cap


def _hub_layout(model: str) -> VisionLayout:
    """The layout of a hub checkpoint (its cached preprocessor config), defaults if it has none."""
    try:
        from huggingface_hub import hf_hub_download

        return read_layout(Path(hf_hub_download(model, "preprocessor_config.json")).parent)
    except Exception:  # no preprocessor file: Qwen's defaults are what the processor would use too
        return VisionLayout()
