"""A tiny random Wan 2.2 I2V A14B model, built fully offline, for tests, the demo and CPU benchmarks.

It is the real thing, only small: two ``WanTransformer3DModel`` experts (``transformer`` = high noise,
``transformer_2`` = low noise, 36 input channels), an ``AutoencoderKLWan``, a ``UMT5EncoderModel`` with a
word-level tokenizer, the UniPC flow scheduler and ``boundary_ratio = 0.9`` — saved as a diffusers folder
that ``WanImageToVideoPipeline.from_pretrained`` loads.  Every code path the trainer uses on a 14B model
runs unchanged on it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# Word list of the tokenizer: demo/test captions plus common caption words.  Anything else maps to <unk>;
# the tokenizer lower-cases and splits on whitespace and punctuation.
_WORDS = """
a an the of and or with in on at to from into over under around across through by for as is are be
it its this that these those his her their one two three four five six seven eight nine ten
left right up down forward backward fast slow slowly quickly smooth smoothly steady steadily
camera orbit orbits orbiting 360 pan pans panning tilt tilts zoom zooms zooming dolly push pull
rotate rotates rotating rotation spin spins spinning move moves moving motion moment still static
square squares circle circles dot dots stripe stripes bar bars box boxes block blocks shape shapes
pattern patterns gradient grid checker checkerboard line lines wave waves ball balls cube
red green blue yellow white black gray grey orange purple pink brown colorful colourful bright dark
background foreground scene subject object frame frames clip video image picture shot view close
person man woman girl boy people young old face hair eyes smile smiling walking running dancing
sky sea ocean water river mountain mountains forest tree trees city street road house castle
sun moon light night day cloud clouds rain snow fire
style painting painted watercolor oil anime cartoon sketch photo photograph cinematic film
realistic detailed soft sharp blurry glowing neon vintage
slides slide sliding drifts drift drifting bounces bounce bouncing falls fall falling rises rise
rising flies fly flying travels travel traveling moves across toward towards away
small large big tiny huge
synthetic test demo sample trigger sks ohwx frung
""".split()
_SPECIALS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2: pad and eos as in T5

TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=36,
    out_channels=16,
    text_dim=32,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=1024,  # as the real model: positions for up to 1024 patches per side (768² needs 48)
)
# The latent contract is the A14B VAE's (16 channels, ÷8 in space, ÷4 in time, causal first frame, latents_mean/std),
# but the tiny VAE folds 2×2 pixels into channels first (``patch_size=2``, the Wan 2.2 VAE's own mechanism) and
# keeps one resampling block per level, so a 768² × 41-frame preview encodes and decodes in seconds on a CPU.
VAE_CONFIG = dict(
    base_dim=3, z_dim=16, dim_mult=[1, 1, 1], num_res_blocks=0, temperal_downsample=[True, True],
    patch_size=2, in_channels=12, out_channels=12, scale_factor_spatial=8, scale_factor_temporal=4,
)
BOUNDARY_RATIO = 0.9


def tiny_vocab() -> dict[str, int]:
    """Token → id for the tiny tokenizer (specials first, then the word list without duplicates)."""
    vocab: dict[str, int] = {}
    for w in _SPECIALS + _WORDS + [".", ",", "[", "]", "-", "!", "?", "'", ":"]:
        vocab.setdefault(w, len(vocab))
    return vocab


def build_tokenizer():  # -> PreTrainedTokenizerFast
    """A word-level T5-style tokenizer (``$A </s>``, pad 0) that needs no download."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = tiny_vocab()
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def build_tiny_pipeline(seed: int = 0):  # -> WanImageToVideoPipeline
    """All components with deterministic random weights (same seed → same weights)."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    high = WanTransformer3DModel(**TRANSFORMER_CONFIG)
    torch.manual_seed(seed + 1)
    low = WanTransformer3DModel(**TRANSFORMER_CONFIG)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLWan(**VAE_CONFIG)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed + 3)
    te_cfg = UMT5Config(
        vocab_size=len(tiny_vocab()), d_model=TRANSFORMER_CONFIG["text_dim"], d_kv=8, d_ff=64, num_layers=2,
        num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    text_encoder = UMT5EncoderModel(te_cfg).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
        image_processor=None, image_encoder=None, transformer=high, transformer_2=low,
        boundary_ratio=BOUNDARY_RATIO,
    )


def write_folder_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` fills a temp folder beside ``path``, which then replaces ``path`` in one rename: a reader
    (or a crash) never sees half a model folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write the tiny model as a diffusers folder at ``path`` (built in a temp folder, then renamed)."""
    return write_folder_atomically(path, build_tiny_pipeline(seed).save_pretrained)


def is_current(path: Path) -> bool:
    """True when the folder holds a tiny model built from today's configs.

    An older build (e.g. one whose rotary table stopped at 32 patches, which made 768² previews crash with
    ``shape '[1, 48, 1, -1]' is invalid``) is rebuilt rather than trusted.
    """
    path = Path(path)
    if not (path / "model_index.json").is_file():
        return False
    for sub, want in (("transformer", TRANSFORMER_CONFIG), ("transformer_2", TRANSFORMER_CONFIG), ("vae", VAE_CONFIG)):
        try:
            have = json.loads((path / sub / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if any(have.get(k) != json.loads(json.dumps(v)) for k, v in want.items()):
            return False
    return True


def ensure_tiny_model(path: Path | None = None) -> Path:
    """The tiny model at ``path`` (default ``paths.tiny_model_dir()``), built on first use or when outdated."""
    from wanlora.engine.config.paths import tiny_model_dir

    path = Path(path) if path is not None else tiny_model_dir()
    if is_current(path):
        return path
    # Several processes at first use (trials side by side on one machine): one builds, the others wait for it
    # and find it current; two builders would each remove the folder the other had just put in place.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_current(path):
            build_tiny_model(path)
    return path
