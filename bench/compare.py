"""Cost of choosing a checkpoint: eval loss per save, and preview time with and without an accelerator LoRA.

Builds a job folder around a Wan 2.2 I2V diffusers model (``--model``: full size for the GPU figure, or
``--tiny``): synthetic clips (a few training clips plus ``--eval-clips`` held out, ``--frames`` ×
``--res``²), ``--checkpoints`` random LoRA pairs of the job's rank written as the trainer names them, a
random step-distilled pair of ``--accel-rank`` in LightX2V's folder layout, and one sample prompt at the
job's [sample] defaults (768², 41 frames, 25 steps) unless overridden.  Then times, through the real
``wanlora compare`` code (``engine.train.compare.compare_job``):

1. ``eval``: the eval loss of every checkpoint file (both experts, 4 timestep bands, the held-out clips) —
   what the trainer spends at each save;
2. ``preview``: one cell at the sample defaults;
3. ``preview_accel``: the same cell with ``sample.accelerator_lora`` (its 4 steps, CFG 1).

    python bench/compare.py --model /models/Wan2.2-I2V-A14B-Diffusers          # GPU figure
    python bench/compare.py --tiny                                             # CPU smoke run

Prints one JSON line per measurement (``--out FILE`` appends them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODULES = {"attn1.to_q": "dd", "attn1.to_k": "dd", "attn1.to_v": "dd", "attn1.to_out.0": "dd",
           "attn2.to_q": "dd", "attn2.to_k": "dd", "attn2.to_v": "dd", "attn2.to_out.0": "dd",
           "ffn.net.0.proj": "df", "ffn.net.2": "fd"}


def random_lora(model: Path, expert: str, rank: int, seed: int, scale: float = 0.01) -> dict:
    """peft-named random LoRA weights of the right shapes, read from the expert's config (no model load)."""
    import torch

    sub = "transformer" if expert == "high_noise" else "transformer_2"
    cfg = json.loads((model / sub / "config.json").read_text())
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    sizes = {"d": dim, "f": cfg["ffn_dim"]}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(cfg["num_layers"]):
        for mod, (a, b) in MODULES.items():
            sd[f"blocks.{i}.{mod}.lora_A.weight"] = torch.randn(rank, sizes[a], generator=g) * scale
            sd[f"blocks.{i}.{mod}.lora_B.weight"] = torch.randn(sizes[b], rank, generator=g) * scale
    return sd


def build(work: Path, model: Path, a: argparse.Namespace) -> Path:
    """The job folder: clips, held-out clips, ctrl image, checkpoint pairs, accelerator pair, job.toml."""
    from PIL import Image
    from wanlora.engine.data.decode import read_video_frames
    from wanlora.engine.data.synthetic import write_clips
    from wanlora.engine.model.lora_format import lora_metadata, save_lora
    from wanlora.engine.train.demo import demo_job_dict, write_job_dir

    clips, held = work / "clips", work / "held"
    n_src = max(24, a.frames + 8)
    write_clips(clips, n=2, num_frames=n_src, size=(a.res, a.res), seed=1)
    write_clips(held, n=a.eval_clips, num_frames=n_src, size=(a.res, a.res), seed=2, prefix="held")
    ctrl = work / "ctrl.png"
    Image.fromarray(read_video_frames(sorted(held.glob("*.mp4"))[0], [0])[0]).save(ctrl)
    d = demo_job_dict(clips, model, steps=a.checkpoints * 250, num_frames=a.frames, resolution=a.res, name="bench")
    d["target"] = {"rank": a.rank, "alpha": a.rank, "modules": "attn+ffn"}
    d["quantization"] = {"transformer": a.quant, "text_encoder": "none"}
    d["datasets"].append({"folder": str(held), "resolutions": [a.res], "num_frames": a.frames, "is_eval": True})
    sample = {"prompts": [{"prompt": "a red square moving right", "ctrl_img": str(ctrl)}]}
    for k in ("width", "height", "num_frames", "steps"):
        v = getattr(a, f"sample_{k}")
        if v:
            sample[k] = v
    d["sample"] = sample
    job = write_job_dir(work / "job", d)
    out = job / "checkpoints"
    for c in range(1, a.checkpoints + 1):
        for e in ("high_noise", "low_noise"):
            meta = lora_metadata(base_model=str(model), expert=e, rank=a.rank, alpha=a.rank, trigger="",
                                 step=c * 250, recipe="custom", modules="attn+ffn", boundary_ratio=0.9)
            save_lora(out / f"bench_{e}_{c * 250:06d}.safetensors", random_lora(model, e, a.rank, seed=c),
                      alpha=a.rank, dtype="bf16", metadata=meta)
    accel = work / "lightx2v"
    for e in ("high_noise", "low_noise"):
        save_lora(accel / f"{e}_model.safetensors", random_lora(model, e, a.accel_rank, seed=99), alpha=a.accel_rank,
                  dtype="bf16", metadata={})
    return job


def with_accelerator(job: Path, accel: Path) -> None:
    import tomllib

    import tomli_w

    d = tomllib.loads((job / "job.toml").read_text())
    d["sample"]["accelerator_lora"] = str(accel)
    (job / "job.toml").write_text(tomli_w.dumps(d))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="Wan 2.2 I2V diffusers folder")
    ap.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (smoke test of this script)")
    ap.add_argument("--frames", type=int, default=41, help="eval clip frames (guide: 41)")
    ap.add_argument("--res", type=int, default=512, help="eval clip resolution (guide: 512)")
    ap.add_argument("--eval-clips", type=int, default=3)
    ap.add_argument("--checkpoints", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--accel-rank", type=int, default=64)
    ap.add_argument("--quant", default="none", choices=["none", "fp8", "nf4"])
    ap.add_argument("--sample-width", type=int, default=0)
    ap.add_argument("--sample-height", type=int, default=0)
    ap.add_argument("--sample-num-frames", type=int, default=0)
    ap.add_argument("--sample-steps", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of eval,preview,preview_accel to skip")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    import torch
    from wanlora.engine.train.compare import compare_job

    if a.tiny:
        from wanlora.engine.model.tiny import ensure_tiny_model

        a.model = ensure_tiny_model(Path(tempfile.gettempdir()) / "wanlora-bench-tiny")
        a.frames, a.res = min(a.frames, 9), min(a.res, 64)
        a.sample_width = a.sample_width or 64
        a.sample_height = a.sample_height or 64
        a.sample_num_frames = a.sample_num_frames or 9
        a.sample_steps = a.sample_steps or 4
    if a.model is None:
        ap.error("give --model PATH (a Wan 2.2 I2V diffusers folder) or --tiny")
    device = torch.device("cuda" if torch.cuda.is_available() and not a.tiny else "cpu")
    skip = set(a.skip.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        job = build(Path(tmp), a.model.resolve(), a)
        base = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "model": str(a.model),
                "eval_clips": a.eval_clips, "frames": a.frames, "res": a.res, "rank": a.rank, "quant": a.quant,
                "setup_s": round(time.perf_counter() - t0, 1)}
        say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        if "eval" not in skip:
            r = compare_job(job, device=device, previews=False, recompute=True, out_dir=job / "c_eval", say=say)
            ev = r.timing["eval"]
            rows.append({**base, "what": "eval", "per_file_s": [x["eval_s"] for x in ev],
                         "per_save_s": round(sum(x["eval_s"] for x in ev) / a.checkpoints, 3),
                         "forwards_per_save": 2 * 4 * a.eval_clips, "load_s": r.timing.get("load_s"),
                         "peak_gib": _peak(device)})
        for what in ("preview", "preview_accel"):
            if what in skip:
                continue
            if what == "preview_accel":
                with_accelerator(job, Path(tmp) / "lightx2v")
            r = compare_job(job, device=device, steps=[250], eval_loss=False, out_dir=job / f"c_{what}", say=say)
            p = r.timing["previews"][0]
            rows.append({**base, "what": what, "cell_s": p["s"], "steps": p["steps"], "frames": p["frames"],
                         "size": f"{p['width']}x{p['height']}", "load_s": r.timing.get("load_s"),
                         "peak_gib": _peak(device)})
    for row in rows:
        line = json.dumps(row)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")
    return 0


def _peak(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    v = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    torch.cuda.reset_peak_memory_stats()
    return v


if __name__ == "__main__":
    sys.exit(main())
