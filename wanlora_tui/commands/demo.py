"""``wanlora demo``: the whole path on the built-in tiny model and synthetic clips, on the CPU in ~a minute.

Writes a few real mp4 clips (a red square moving right), builds the tiny random Wan 2.2 I2V model (both
experts, VAE, text encoder — offline), writes a job folder and trains both experts with the real trainer
(``engine.train``), then prints where the LoRA pair, the events and the status are.  Proves an install
works end to end before renting a GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

HELP = "train a tiny LoRA pair on synthetic clips (CPU, about a minute): proves the install works"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "demo") -> None:
    parser.add_argument("--home", type=Path, default=None,
                        help="folder for the demo's clips, model and job (default: <wanlora home>/demo)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps (both experts, default 60)")
    parser.add_argument("--gpu", action="store_true", help="train on the GPU if there is one (default: CPU)")


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.config.paths import wanlora_home

    home = Path(args.home).expanduser() if args.home else wanlora_home()
    if args.steps < 1:
        print("--steps must be at least 1")
        return 2
    # the demo never downloads anything; scoped, so a caller's process (a test, the TUI) keeps its own setting
    was = os.environ.get("HF_HUB_OFFLINE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return _run(args, home)
    finally:
        if was is None:
            os.environ.pop("HF_HUB_OFFLINE", None)


def _run(args: argparse.Namespace, home: Path) -> int:
    from wanlora.engine.config import jobdir
    from wanlora.engine.config.paths import tiny_model_dir
    from wanlora.tui.progress import quiet_libraries

    quiet_libraries()
    import torch
    from wanlora.engine.train.demo import prepare_demo
    from wanlora.engine.train.loop import run as train

    model = home / "models" / "tiny-wan22-i2v" if args.home else tiny_model_dir()
    print(f"wanlora demo: preparing clips and the tiny model under {home} …", flush=True)
    job_dir = prepare_demo(home, steps=args.steps, model=model)
    for sub in (jobdir.STATE_DIR, jobdir.CHECKPOINTS):  # a demo always starts fresh
        shutil.rmtree(job_dir / sub, ignore_errors=True)
    for name in (jobdir.EVENTS, jobdir.STATUS):
        (job_dir / name).unlink(missing_ok=True)
    device = torch.device("cuda") if args.gpu and torch.cuda.is_available() else torch.device("cpu")
    print(f"training both experts for {args.steps} steps on the {device.type.upper()} … (Ctrl-C stops it)", flush=True)
    from wanlora.tui.progress import EventPrinter

    interrupted = False
    with EventPrinter(job_dir, lambda line: print(f"  {line}", flush=True)):
        try:
            code = train(job_dir, device=device)
        except KeyboardInterrupt:
            code, interrupted = 130, True
    status = jobdir.read_status(job_dir) or {}
    if code == 130 or interrupted:
        print(f"demo stopped by Ctrl-C at step {status.get('step', 0)}/{args.steps}; `wanlora demo` starts it again")
        return 130
    if code != jobdir.EXIT_OK:
        print(f"demo failed ({jobdir.EXIT_REASONS.get(code, code)}): {status.get('message', '')}")
        print(f"events: {job_dir / jobdir.EVENTS}")
        return 1
    losses = [e["loss"] for e in jobdir.read_events(job_dir) if e["type"] == "step"]
    ckpt = job_dir / jobdir.CHECKPOINTS
    print(f"done: {len(losses)} steps, loss {losses[0]:.4f} → {losses[-1]:.4f}")
    print(f"  LoRA pair   {ckpt / 'wanlora_demo_high_noise.safetensors'}")
    print(f"              {ckpt / 'wanlora_demo_low_noise.safetensors'}")
    print(f"  job folder  {job_dir}  (job.toml, events.jsonl, status.json, state/)")
    print(f"  clips       {home / 'demo' / 'clips'}")
    print(f"  tiny model  {model}")
    print("load in diffusers: pipe.load_lora_weights(high); pipe.load_lora_weights(low, load_into_transformer_2=True)")
    ctrl = home / "demo" / "ctrl.png"
    first = ctrl if ctrl.is_file() else _first_frame(home / "demo" / "clips", home / "demo" / "first_frame.png")
    print("next (README: \"From the demo to your first real job\"): render the pair at the default size,")
    print(f"  wanlora sample {ckpt / 'wanlora_demo_high_noise.safetensors'} \\\n"
          f"      {ckpt / 'wanlora_demo_low_noise.safetensors'} \\\n"
          f"      --image {first or 'FIRST_FRAME.png'} --prompt \"a red square moving right\"")
    print(f"  or queue the same job through the daemon: wanlora daemon start && wanlora submit {job_dir / 'job.toml'}")
    print(f"compare the checkpoints (eval loss, previews, a pick): wanlora compare {job_dir}")
    return 0


def _first_frame(clips: Path, out: Path) -> Path | None:
    """The first frame of the first demo clip as a PNG: the control image `wanlora sample` needs."""
    try:
        from PIL import Image
        from wanlora.engine.data.decode import read_video_frames

        clip = sorted(clips.glob("*.mp4"))[0]
        Image.fromarray(read_video_frames(clip, [0])[0]).save(out)
        return out
    except Exception:  # a convenience: the demo has succeeded either way
        return None
