"""``wanlora model find [DIR…]`` and ``wanlora model pull [--parts …]``: use the weights a machine already has,
fetch only what a job needs.  Torch-free (headers only; downloads through huggingface_hub)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wanlora.engine.config.experts import EXPERTS

HELP = "find Wan 2.2 I2V weights on this machine (ComfyUI, HF cache) or download only the parts a job needs"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "model") -> None:
    sub = parser.add_subparsers(dest="model_cmd", metavar="find|pull")
    f = sub.add_parser("find", help="list the experts, VAE and text encoder files found, with job-file lines")
    f.add_argument("dirs", nargs="*", metavar="DIR", help="folders to search (default: $HF_HOME, /workspace, ~)")
    f.add_argument("--json", action="store_true", help="machine-readable list")
    f.add_argument("--like", metavar="FOLDER", help="check shapes against this diffusers folder's configs "
                                                   "(default: Wan 2.2 I2V A14B's)")
    p = sub.add_parser("pull", help="download only the parts a job needs into $HF_HOME (prints the disk first)")
    p.add_argument("--job", metavar="JOB.toml", help="take the parts this job needs (its trained experts, …)")
    p.add_argument("--parts", help="comma list of high_noise,low_noise,text_encoder,vae,tokenizer (default: all, "
                                   "or what --job needs)")
    p.add_argument("--precision", choices=["fp16", "fp8_scaled"], default="fp8_scaled",
                   help="experts and text encoder: fp8_scaled (14 GB/expert, trains with quantization.transformer "
                        "= fp8) or fp16 (29 GB/expert)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the disk it needs, download nothing")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "model_cmd", None) == "find":
        return _find(args)
    if getattr(args, "model_cmd", None) == "pull":
        return _pull(args)
    print("usage: wanlora model find [DIR…] | wanlora model pull [--job JOB.toml] [--parts …] [--dry-run]",
          file=sys.stderr)
    return 2


def _find(args: argparse.Namespace) -> int:
    from wanlora.engine.model.find import find_parts, job_lines, render

    found = find_parts([Path(d) for d in args.dirs] or None, Path(args.like).expanduser() if args.like else None)
    if args.json:
        rows = [{"path": str(c.path), "part": c.part, "layout": c.report.layout, "precision": c.report.precision,
                 "bytes": c.report.nbytes, "usable": c.usable, "problems": c.problems} for c in found.candidates]
        print(json.dumps({"files": rows, "diffusers_folders": [str(p) for p in found.diffusers_folders],
                          "job_lines": job_lines(found)}, indent=2))
        return 0
    print(render(found), end="")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from wanlora.engine.model import pull as P
    from wanlora.engine.model.weight_files import FILE_PARTS

    if args.parts:
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        bad = [p for p in parts if p not in P.PULL_PARTS]
        if bad:
            print(f"--parts: unknown {', '.join(bad)}; choose from {', '.join(P.PULL_PARTS)}", file=sys.stderr)
            return 2
    elif args.job:
        from wanlora.engine.config.presets import resolve_file

        parts = P.needed_parts(resolve_file(args.job).job)
    else:
        parts = list(P.PULL_PARTS)
    if not parts:
        print("the job already has every part as a local file: nothing to download")
        return 0
    try:
        plan = P.plan(parts, args.precision)
        print(P.render_plan(plan), end="")
        if not plan.fits:
            raise P.PullError(f"not enough disk: {P._gb(plan.download_bytes)} to download, {P._gb(plan.free_bytes)} "
                              f"free in {plan.cache_dir}; free space or set HF_HOME to a bigger disk")
        if args.dry_run:
            return 0
        got = P.download(plan)
    except P.PullError as e:
        print(f"wanlora model pull: {e}", file=sys.stderr)
        return 1
    lines = ["[model]"] + [f'{p}_file = "{got[p]}"' for p in FILE_PARTS if p in got]
    if args.precision == "fp8_scaled" and any(p in got for p in EXPERTS):
        lines += ["", "[quantization]", 'transformer = "fp8"']
    print("\ndone. job-file lines:\n" + "\n".join("  " + ln if ln else "" for ln in lines))
    return 0
