"""Seconds per clip and peak VRAM of ``wanlora caption`` with the full-size Qwen2.5-VL-7B (random weights).

No download: the 7B architecture (engine/caption/configs/qwen2_5_vl_7b.json) is built in GPU memory with
random bf16 weights.  Real synthetic clips are written first (5 s 832×480 at 16 fps — the guide's
training clips — and 10 s 1280×720 at 30 fps), then each is captioned through the same code as
``wanlora caption`` (decode at the clip's real fps, processor inputs, greedy generation, post-processing,
the caption file written).  Random weights never emit end-of-text, so every caption is the full
``--max-new-tokens``: the s/clip here is an upper bound for the real model, whose captions stop earlier.

    python bench/caption_speed.py --out /tmp/caption_speed.json [--clips 6] [--max-new-tokens 80]

Writes one JSON object (per-clip seconds, median after the first, load seconds, visual tokens, peak VRAM).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON result file")
    ap.add_argument("--clips", type=int, default=4, help="clips of each kind (default 4)")
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--backend", choices=("auto", "processor", "builtin"), default="auto")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("caption_speed: needs a CUDA GPU", file=sys.stderr)
        return 2
    from wanlora.engine.caption.prompts import instruction
    from wanlora.engine.caption.run import CaptionOptions, caption_files
    from wanlora.engine.caption.sampling import load_frames
    from wanlora.engine.caption.tiny import full_captioner
    from wanlora.engine.data.synthetic import write_clips

    work = Path(tempfile.mkdtemp(prefix="caption-bench-"))
    t0 = time.monotonic()
    guide = write_clips(work / "clips", n=args.clips, num_frames=81, size=(832, 480), fps=16.0, captions=False,
                        prefix="guide")
    hd = write_clips(work / "clips", n=args.clips, num_frames=300, size=(1280, 720), fps=30.0, captions=False,
                     prefix="hd", seed=1)
    clips_s = time.monotonic() - t0

    torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    cap = full_captioner("cuda", backend=args.backend, max_new_tokens=args.max_new_tokens)
    torch.cuda.synchronize()
    load_s = time.monotonic() - t0
    weights_gib = torch.cuda.memory_allocated() / 2**30

    rows = []
    for kind, files in (("832x480 5s 16fps", guide), ("1280x720 10s 30fps", hd)):
        per: list[float] = []

        def note(i: int, n: int, res, per=per, kind=kind) -> None:  # noqa: ANN001 - run.ClipResult
            per.append(res.seconds)
            print(f"{kind} {i}/{n} {res.path.name}: {res.seconds:.2f} s ({res.status})", flush=True)

        torch.cuda.synchronize()
        caption_files(cap, files, CaptionOptions(recipe="motion"), on_result=note)
        frames = load_frames(files[0])
        inputs = cap.inputs(frames, instruction("motion"))
        grid = inputs["video_grid_thw"][0].tolist()
        rows.append({"clips": kind, "frames_sampled": int(frames.pixels.shape[0]),
                     "frame_size": list(frames.pixels.shape[1:3]), "video_grid_thw": grid,
                     "visual_tokens": int(grid[0] * grid[1] * grid[2] // 4),
                     "prompt_tokens": int(inputs["input_ids"].shape[1]), "s_per_clip": [round(x, 3) for x in per],
                     "median_s_per_clip": round(statistics.median(per[1:] or per), 3)})
    result = {
        "model": "Qwen2.5-VL-7B architecture, random bf16 weights", "device": torch.cuda.get_device_name(0),
        "backend": cap.backend, "max_new_tokens": args.max_new_tokens, "load_s": round(load_s, 2),
        "weights_gib": round(weights_gib, 2), "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2), "write_clips_s": round(clips_s, 1),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__, "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
