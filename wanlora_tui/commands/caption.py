"""``wanlora caption FOLDER``: write the guide's recipe-style captions with a video language model.

For each clip and image in FOLDER without a caption file, frames are sampled at the clip's real frame
rate, a Qwen-VL model (default Qwen/Qwen2.5-VL-7B-Instruct; 4-bit on small cards) is asked for a caption
in the recipe's style, and ``<clip>.txt`` is written next to the clip.  Existing captions are never
replaced without ``--overwrite``; ``--dry-run`` prints instead of writing; Ctrl-C keeps every caption
already written (exit 130) and a second run does only the rest.  ``--queue`` runs the same through the
daemon as a job of its own (survives SSH drops; ``wanlora status`` / ``attach`` show it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from wanlora.tui.commands._daemon_common import add_home, home_of

HELP = "caption clips with a video language model in the recipe's style (Qwen2.5-VL / Qwen3-VL)"
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "caption") -> None:
    parser.add_argument("folder", type=Path, help="folder of clips (.mp4 .mov .mkv .webm .avi) and images")
    parser.add_argument("--recipe", choices=("motion", "style", "character"), default=None,
                        help="caption style: motion names the camera move and action, style describes the look, "
                             "character starts with the trigger and a class (default: character when --class is "
                             "given, else motion)")
    parser.add_argument("--trigger", default="", help="trigger word character captions start with ([trigger] if none)")
    parser.add_argument("--class", dest="class_word", default="", help="what the character is, e.g. \"young woman\"")
    parser.add_argument("--overwrite", action="store_true", help="replace existing caption files")
    parser.add_argument("--dry-run", action="store_true", help="print the captions, write nothing")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Qwen2.5-VL / Qwen3-VL hub id or local folder "
                        f"(default {DEFAULT_MODEL})")
    parser.add_argument("--quant", choices=("auto", "none", "4bit"), default="auto",
                        help="4-bit weights (bitsandbytes); auto = when the GPU lacks room for bf16")
    parser.add_argument("--caption-ext", default="txt", help="caption file extension (the dataset's caption_ext)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is present (slow)")
    parser.add_argument("--queue", action="store_true", help="run it as a daemon job instead of here")
    add_home(parser)


def _recipe(args: argparse.Namespace) -> str:
    return args.recipe or ("character" if args.class_word.strip() else "motion")


def bar(i: int, n: int, width: int = 20) -> str:
    """``[#####---------------]  5/20``."""
    filled = round(width * i / n) if n else width
    return f"[{'#' * filled}{'-' * (width - filled)}] {i:>{len(str(n))}}/{n}"


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.caption.prompts import PromptError, check_options
    from wanlora.engine.caption.run import plan
    from wanlora.engine.data.scan import ScanError

    recipe = _recipe(args)
    try:
        check_options(recipe, args.trigger, args.class_word)
    except PromptError as e:
        print(f"wanlora caption: {e}", file=sys.stderr)
        return 2
    folder: Path = args.folder.expanduser()
    if args.queue:
        return _queue(args, recipe, folder)
    try:
        todo = plan(folder, args.caption_ext, args.overwrite)
    except ScanError as e:
        print(f"wanlora caption: {e}", file=sys.stderr)
        return 1
    for p, why in todo.skipped:
        print(f"skipped {p.name}: {why}", file=sys.stderr)
    kept = f" ({len(todo.captioned)} already captioned, kept; --overwrite replaces them)" if todo.captioned else ""
    if not todo.todo:
        bad = f"; {len(todo.skipped)} unreadable file(s) skipped" if todo.skipped else ""
        print(f"nothing to caption in {folder}: every readable clip has a caption{kept}{bad}")
        return 0
    print(f"{len(todo.todo)} file(s) to caption in {folder} as {recipe} captions{kept}", flush=True)
    return _caption_here(args, recipe, todo.todo)


def _caption_here(args: argparse.Namespace, recipe: str, files: list[Path]) -> int:
    from wanlora.engine.caption.run import CaptionOptions, ClipResult, Summary, caption_files
    from wanlora.engine.caption.vlm import CaptionModelError, load_captioner
    from wanlora.tui.progress import quiet_libraries

    quiet_libraries()
    import torch

    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    print(f"loading {args.model} on the {device.upper()} …", flush=True)
    t0 = time.monotonic()
    try:
        captioner = load_captioner(args.model, device=device, quant=args.quant)
    except CaptionModelError as e:
        print(f"wanlora caption: {e}", file=sys.stderr)
        return 1
    print(f"loaded in {time.monotonic() - t0:.0f} s ({'4-bit' if captioner.quantized else 'full precision'}, "
          f"{captioner.backend} inputs)", flush=True)
    opts = CaptionOptions(recipe=recipe, trigger=args.trigger, class_word=args.class_word,
                          overwrite=args.overwrite, dry_run=args.dry_run, caption_ext=args.caption_ext)
    summary = Summary()

    def show(i: int, n: int, res: ClipResult) -> None:
        if res.status == "skipped":
            print(f"{bar(i, n)} {res.path.name}: skipped, {res.error}", file=sys.stderr, flush=True)
            return
        note = {"written": "", "printed": "", "kept": " (a caption appeared meanwhile: kept, not replaced)"}[res.status]
        print(f"{bar(i, n)} {res.path.name} ({res.seconds:.1f} s){note}\n    {res.caption}", flush=True)

    try:
        caption_files(captioner, files, opts, on_result=show, summary=summary)
    except KeyboardInterrupt:
        written = len(summary.of("written"))
        print(f"\ninterrupted: {written} caption(s) written are kept; run the same command again to caption the "
              f"other {len(files) - len(summary.results)}", file=sys.stderr)
        return 130
    _report(summary, args.dry_run)
    return 0


def _report(summary, dry_run: bool) -> None:  # noqa: ANN001 - run.Summary
    skipped = summary.of("skipped")
    if dry_run:
        print(f"dry run: {len(summary.of('printed'))} caption(s) printed, nothing written")
    else:
        print(f"{len(summary.of('written'))} caption(s) written")
    if skipped:
        print(f"{len(skipped)} file(s) could not be read and were skipped:", file=sys.stderr)
        for r in skipped:
            print(f"  {r.path}: {r.error}", file=sys.stderr)


def _queue(args: argparse.Namespace, recipe: str, folder: Path) -> int:
    from wanlora.daemon import client
    from wanlora.engine.checks.caption_job import check_text
    from wanlora.engine.config.caption_job import CaptionSpec, job_name, to_text

    if args.dry_run:
        print("wanlora caption: --dry-run prints here; it cannot be queued", file=sys.stderr)
        return 2
    spec = CaptionSpec(folder=str(folder.resolve()), recipe=recipe, trigger=args.trigger, class_word=args.class_word,
                       overwrite=args.overwrite, model=args.model, quant=args.quant, caption_ext=args.caption_ext)
    text = to_text(spec)
    errors = [f for f in check_text(text)["findings"] if f["level"] == "error"]
    if errors:
        for f in errors:
            print(f"error: {f['key']}: {f['message']}", file=sys.stderr)
        return 1
    home = home_of(args)
    try:
        done = client.submit(home, text, f"{job_name(folder)}.toml")
    except (client.DaemonError, client.NotSpooled) as e:
        print(f"wanlora caption: not queued: {e}", file=sys.stderr)
        return 1
    if done.job_id is None:
        print(f"{done.note or client.DOWN_MESSAGE}. The caption job is spooled as {done.spooled} and is queued when "
              "the daemon starts.", file=sys.stderr)
        return 0
    print(f"Submitted job {done.job_id} ({job_name(folder)}): `wanlora attach {done.job_id}` follows it")
    return 0
