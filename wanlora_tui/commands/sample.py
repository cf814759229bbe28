"""``wanlora sample HIGH.safetensors [LOW.safetensors] --image X --prompt Y``: evaluate a checkpoint pair.

The guide keeps previews off during Wan I2V training and evaluates afterwards; this is that step.  The
base model (``--model``, else the ``base_model`` the LoRA's metadata names) runs through the stock
diffusers pipeline with the high-noise LoRA in ``transformer`` and the low-noise one in
``transformer_2`` (each file's metadata says which expert it is; otherwise the first is high, the second
low).  Writes ``<step>_0.mp4`` and ``<step>_0.png`` into ``--out`` (default: ``samples/`` beside the LoRA).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wanlora.engine.config.frames import valid_frames, valid_frames_at_most
from wanlora.engine.config.schema import WAN_NEGATIVE_PROMPT

HELP = "I2V preview from a LoRA checkpoint pair (high + low noise)"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "sample") -> None:
    parser.add_argument("loras", nargs="+", metavar="LORA", help="high-noise and/or low-noise .safetensors")
    parser.add_argument("--image", required=True, help="first frame (control image)")
    parser.add_argument("--prompt", required=True, help="what the clip should show")
    parser.add_argument("--negative", default=WAN_NEGATIVE_PROMPT,
                        help="negative prompt (default: Wan's own, as the training previews use; \"\" = none)")
    parser.add_argument("--model", default=None, help="base model folder or hub id (default: the LoRA's base_model)")
    parser.add_argument("--frames", type=int, default=41, help="frames, 4n+1 (default 41)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    parser.add_argument("--guidance", type=float, default=3.5, help="CFG scale of the high-noise expert (default 3.5)")
    parser.add_argument("--guidance-2", type=float, default=None, help="CFG scale of the low-noise expert (default: --guidance)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--sampler", choices=["unipc", "flowmatch"], default="unipc")
    parser.add_argument("--out", default=None, help="output folder (default: samples/ beside the first LoRA)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--low-vram", action="store_true", help="one expert on the GPU at a time")


def _problems(args: argparse.Namespace) -> list[str]:
    out = []
    if len(args.loras) > 2:
        out.append("give at most two LoRA files (high noise, low noise)")
    for p in [*args.loras, args.image]:
        if not Path(p).expanduser().is_file():
            out.append(f"{p} does not exist")
    if not valid_frames(args.frames):
        out.append(f"--frames must be 4n+1 (e.g. {valid_frames_at_most(args.frames)})")
    if args.width % 16 or args.height % 16:
        out.append("--width and --height must be multiples of 16")
    return out


def run(args: argparse.Namespace) -> int:
    problems = _problems(args)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 2
    from wanlora.tui.progress import quiet_libraries

    quiet_libraries()
    import torch
    from wanlora.engine.model.load import ModelLoadError
    from wanlora.engine.train.previews import sample_from_files

    loras = [Path(p).expanduser() for p in args.loras]
    out = Path(args.out).expanduser() if args.out else loras[0].parent / "samples"
    device = torch.device("cpu") if args.cpu or not torch.cuda.is_available() else torch.device("cuda")

    def on_file(_i, _spec, mp4: Path, png: Path) -> None:
        print(f"wrote {mp4}\n      {png}", flush=True)

    print(f"sampling {args.frames} frames at {args.width}×{args.height}, {args.steps} steps on the "
          f"{device.type.upper()} …" + (" (a CPU takes minutes)" if device.type == "cpu" else ""), flush=True)
    try:
        sample_from_files(loras, model=args.model, image=Path(args.image).expanduser(), prompt=args.prompt,
                          out_dir=out, negative=args.negative, frames=args.frames, steps=args.steps,
                          guidance=args.guidance, guidance_2=args.guidance_2, seed=args.seed, width=args.width,
                          height=args.height, fps=args.fps, sampler=args.sampler, device=device,
                          low_vram=args.low_vram, on_file=on_file, progress=True)
    except ModelLoadError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0
