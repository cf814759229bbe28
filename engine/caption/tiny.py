"""Random-weight Qwen2.5-VL captioners built offline: a tiny one for tests and CI, the full 7B for timing.

Both are real ``Qwen2_5_VLForConditionalGeneration`` checkpoints saved as a folder that ``--model PATH``
loads (config, safetensors, tokenizer, preprocessor configs, chat template), so every code path of
``wanlora caption`` runs on them.  The tokenizer is a word-level one built with ``tokenizers`` (caption
words plus Qwen's ChatML and vision special tokens) wrapped in transformers' fast tokenizer class: nothing
is downloaded.  The 7B is the bundled ``configs/qwen2_5_vl_7b.json`` (Qwen/Qwen2.5-VL-7B-Instruct's
architecture) with this tokenizer's special-token ids; its speed and memory are the real model's, its
captions are noise.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from wanlora.engine.caption.vlm import CLIP_MEAN, CLIP_STD

CONFIG_7B = Path(__file__).resolve().parent / "configs" / "qwen2_5_vl_7b.json"

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
_WORDS = """
a an the of and or with in on at to from into over under around toward away left right up down
camera orbit 360 180 pan tilt zoom dolly push pull tracking handheld static slow fast smooth steady
subject character person woman man young old girl boy walking running dancing turning jumping sitting
film look grainy 16mm 35mm high low contrast warm cool tint neon soft light dark bright colour color
painting watercolor anime cinematic vintage texture sharp blurry glow shadow
square circle red green blue yellow white black gray shape moves slides bounces background scene
clothing casual street city room sky frung trigger shot close wide view
""".split()
PUNCT = [".", ",", ":", ";", "!", "?", "'", '"', "-", "(", ")", "[", "]", "\n"]

# Qwen's chat template, reduced to what wanlora sends: text, one video or one image per turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def vocab() -> dict[str, int]:
    """Token → id: Qwen's special tokens first, then <unk>, caption words, punctuation and letters."""
    out: dict[str, int] = {}
    for w in SPECIALS + ["<unk>"] + _WORDS + PUNCT + list("abcdefghijklmnopqrstuvwxyz0123456789"):
        out.setdefault(w, len(out))
    return out


def build_tokenizer() -> Any:
    """A word-level tokenizer with Qwen's special tokens (never split, skipped when decoding)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab(), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token="<unk>", model_max_length=32768)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def token_ids() -> dict[str, int]:
    """The special-token ids a Qwen2.5-VL config must name for this tokenizer."""
    v = vocab()
    return {"image_token_id": v["<|image_pad|>"], "video_token_id": v["<|video_pad|>"],
            "vision_start_token_id": v["<|vision_start|>"], "vision_end_token_id": v["<|vision_end|>"]}


def tiny_config() -> Any:
    """A Qwen2.5-VL small enough to generate on a CPU in a fraction of a second per caption."""
    from transformers import Qwen2_5_VLConfig

    v = vocab()
    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(v), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e6},
                         bos_token_id=v["<|endoftext|>"], eos_token_id=v["<|im_end|>"],
                         pad_token_id=v["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[1], tokens_per_second=2),
        **token_ids(),
    )


def full_config() -> Any:
    """Qwen2.5-VL-7B-Instruct's architecture (bundled json) with this tokenizer's special-token ids."""
    from transformers import Qwen2_5_VLConfig

    data = json.loads(CONFIG_7B.read_text(encoding="utf-8"))
    data.update(token_ids())
    v = vocab()
    data.update(bos_token_id=v["<|endoftext|>"], eos_token_id=v["<|im_end|>"], pad_token_id=v["<|endoftext|>"])
    return Qwen2_5_VLConfig(**data)


def _preprocessor(max_pixels: int) -> dict[str, Any]:
    common = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "image_mean": list(CLIP_MEAN),
              "image_std": list(CLIP_STD), "do_resize": True, "do_rescale": True, "do_normalize": True,
              "do_convert_rgb": True, "rescale_factor": 1 / 255,
              "size": {"shortest_edge": 56 * 56, "longest_edge": max_pixels}}
    return common


def save_support_files(folder: Path, max_pixels: int = 28 * 28 * 1280) -> None:
    """Tokenizer, preprocessor configs (image and video) and chat template next to the weights."""
    folder = Path(folder)
    build_tokenizer().save_pretrained(folder)
    pre = _preprocessor(max_pixels)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {**pre, "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}, indent=1))
    (folder / "video_preprocessor_config.json").write_text(json.dumps(
        {**pre, "video_processor_type": "Qwen2VLVideoProcessor", "do_sample_frames": False,
         "processor_class": "Qwen2_5_VLProcessor"}, indent=1))
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def build_tiny_captioner(path: Path, seed: int = 0) -> Path:
    """Write the tiny random Qwen2.5-VL folder at ``path`` (built aside, then renamed in)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from wanlora.engine.model.tiny import write_folder_atomically

    def write(tmp: Path) -> None:
        torch.manual_seed(seed)
        Qwen2_5_VLForConditionalGeneration(tiny_config()).eval().save_pretrained(tmp)
        save_support_files(tmp)

    return write_folder_atomically(path, write)


def build_full_captioner(path: Path, device: str = "cuda", seed: int = 0) -> Path:
    """A folder with the 7B architecture in bf16 random weights, built on ``device`` (no download).

    For timing only (bench/caption_speed.py, the gpu test): ~16 GB written to ``path``.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(full_config()).to(torch.bfloat16)
    model.save_pretrained(path)
    del model
    save_support_files(path)
    return path


def full_captioner(device: str = "cuda", *, backend: str = "auto", max_new_tokens: int = 80,
                   seed: int = 0) -> Any:
    """A :class:`vlm.Captioner` over the 7B architecture with random bf16 weights built in GPU memory.

    Only the small files (config, tokenizer, preprocessor configs, chat template) go to a temp folder for
    the processor to load; the 16 GB of weights are never written or read.  For timing: every caption runs
    the full ``max_new_tokens`` (random weights never say end-of-text), so s/clip is an upper bound.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
    from wanlora.engine.caption import vlm

    folder = Path(tempfile.mkdtemp(prefix="wanlora-captioner-7b-"))
    cfg = full_config()
    cfg.save_pretrained(folder)
    save_support_files(folder)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16).eval()
    use_processor = backend == "processor" or (backend == "auto" and vlm.torchvision_available())
    processor = None
    if use_processor:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(folder)
    return vlm.Captioner(model, AutoTokenizer.from_pretrained(folder), processor, vlm.read_layout(folder),
                         "qwen2_5_vl", device, "random Qwen2.5-VL-7B (bench)", False, max_new_tokens)
