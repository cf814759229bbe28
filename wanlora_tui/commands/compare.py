"""``wanlora compare JOB``: the kept checkpoints side by side — eval losses, previews, a suggested pick.

The guide: the best samples often come from somewhere before the last checkpoint; judge kept checkpoints
after training.  For each kept checkpoint pair (or ``--steps``) this renders every sample prompt with its
fixed seed (``sample.accelerator_lora`` makes them fast, labelled accelerated), writes a contact sheet
(``compare/sheet.png``: rows = checkpoints, columns = prompts), an mp4 grid (``compare/grid.mp4``) and an
index (``compare/index.md`` / ``index.json``) with each checkpoint's eval loss per expert and the
suggested pick.  Rendered cells are reused by the next run.  ``--json`` prints the index with a timing
summary (eval seconds per checkpoint, preview seconds per cell) for benchmarks.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from wanlora.engine.config.frames import valid_frames, valid_frames_at_most
from wanlora.tui.commands._daemon_common import add_home, home_of

HELP = "compare kept checkpoints: eval loss per expert, a preview contact sheet, a suggested pick"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "compare") -> None:
    parser.add_argument("job", help="job id or name (see `wanlora status`), or a job folder")
    parser.add_argument("--steps", default=None, help="only these checkpoint steps, e.g. 1500,2000,2500")
    parser.add_argument("--other", choices=["base", "latest"], default="base",
                        help="an expert with no file at a row's step runs with base weights (default) or its newest file")
    parser.add_argument("--no-previews", action="store_true", help="eval losses and the pick only")
    parser.add_argument("--no-eval", action="store_true", help="previews only")
    parser.add_argument("--recompute-eval", action="store_true",
                        help="measure every eval loss again instead of reading the trainer's")
    parser.add_argument("--frames-per-cell", type=int, default=3, help="frames shown per cell in the sheet (default 3)")
    parser.add_argument("--frames", type=int, default=None, help="preview frames (default: the job's [sample])")
    parser.add_argument("--width", type=int, default=None, help="preview width (default: the job's [sample])")
    parser.add_argument("--height", type=int, default=None, help="preview height (default: the job's [sample])")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: JOB_DIR/compare)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--json", action="store_true", help="print the index + timing as JSON (progress on stderr)")
    add_home(parser)


def resolve_job_dir(job: str, jobs_dir: Path) -> Path | None:
    """A job folder from a path, a job id, or a job name (the newest job with that name)."""
    p = Path(job).expanduser()
    if p.is_file() and p.name == "job.toml":
        return p.parent
    if (p / "job.toml").is_file():
        return p
    if (jobs_dir / job / "job.toml").is_file():
        return jobs_dir / job
    named = []
    for d in jobs_dir.iterdir() if jobs_dir.is_dir() else []:
        try:
            with open(d / "job.toml", "rb") as f:
                if tomllib.load(f).get("job", {}).get("name") == job:
                    named.append(d)
        except (OSError, tomllib.TOMLDecodeError):
            continue
    digits = lambda d: int("".join(c for c in d.name if c.isdigit()) or 0)  # noqa: E731
    return max(named, key=digits) if named else None


def _problems(args: argparse.Namespace) -> list[str]:
    out = []
    if args.steps:
        try:
            args.step_list = [int(s) for s in args.steps.replace(" ", "").split(",") if s]
        except ValueError:
            out.append(f"--steps {args.steps!r}: give step numbers separated by commas, e.g. --steps 1500,2000")
    else:
        args.step_list = None
    if args.frames is not None and not valid_frames(args.frames):
        out.append(f"--frames must be 4n+1 (e.g. {valid_frames_at_most(args.frames)})")
    for k in ("width", "height"):
        v = getattr(args, k)
        if v is not None and (v < 16 or v % 16):
            out.append(f"--{k} must be a multiple of 16")
    if args.frames_per_cell < 1:
        out.append("--frames-per-cell must be at least 1")
    if args.no_previews and args.no_eval:
        out.append("--no-previews and --no-eval together leave nothing to do")
    return out


def run(args: argparse.Namespace) -> int:
    problems = _problems(args)
    if problems:
        for p in problems:
            print(f"wanlora compare: {p}", file=sys.stderr)
        return 2
    home = home_of(args)
    job_dir = resolve_job_dir(str(args.job), home.jobs)
    if job_dir is None:
        print(f"wanlora compare: no job {args.job!r} in {home.jobs}; give a job id or name from `wanlora status`, "
              "or a job folder (the one holding job.toml)", file=sys.stderr)
        return 1
    import torch
    from wanlora.engine.config.accelerator import AcceleratorError
    from wanlora.engine.model.load import ModelLoadError
    from wanlora.engine.train.compare import CompareError, compare_job

    device = torch.device("cpu") if args.cpu or not torch.cuda.is_available() else torch.device("cuda")
    stream = sys.stderr if args.json else sys.stdout

    def say(msg: str) -> None:
        print(msg, file=stream, flush=True)

    try:
        res = compare_job(job_dir, steps=args.step_list, device=device, previews=not args.no_previews,
                          eval_loss=not args.no_eval, recompute=args.recompute_eval, other=args.other,
                          frames_per_cell=args.frames_per_cell, out_dir=args.out, num_frames=args.frames,
                          width=args.width, height=args.height, say=say)
    except (CompareError, ModelLoadError, AcceleratorError) as e:
        print(f"wanlora compare: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(res.index.read_text())
        return 0
    print(res.index.with_suffix(".md").read_text().rstrip())
    print(f"\nindex: {res.index}  ({res.rendered} cell(s) rendered, {res.reused} reused)")
    return 0
