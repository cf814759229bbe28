"""``wanlora scan FOLDER``: what is in a dataset folder, and whether it suits the recipe.

Per file: kind, duration, fps, frames, size, caption; unreadable files by name with the reason; then a
summary against the recipe's clip-count advice (from ``presets/<name>.toml`` ``[meta]`` when present) and
the even-sampling speed-up (a long clip squeezed into ``num_frames`` plays too fast, ai-toolkit #421).
Each file is read under a time limit (``--timeout``, commands._scan_limit).  Torch-free.  Exit 0 when there is at least one usable clip or image, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HELP = "dataset report: clips, durations, fps, sizes, captions, unreadable files"

# Clip-count advice when presets/<name>.toml has no [meta] (SPEC §3).
FALLBACK_ADVICE: dict[str, dict[str, Any]] = {
    "motion": {"clips_min": 10, "clips_max": 30, "clip_advice": "10-30 short clips (3-8 s); the motion fills the clip."},
    "style": {"clips_min": 10, "clips_max": 40, "clip_advice": "10-40 images or clips sharing the same look."},
    "character": {
        "clips_min": 10,
        "clips_max": 40,
        "clip_advice": "10-30 clips of the character (20-40 is better), varied pose, scale and angle.",
    },
}
DEFAULT_NUM_FRAMES = 41


def add_arguments(parser: argparse.ArgumentParser, verb: str = "scan") -> None:
    parser.add_argument("folder", help="the dataset folder (clips and images with same-name .txt captions)")
    parser.add_argument("--preset", choices=sorted(FALLBACK_ADVICE), help="compare against this recipe's advice")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.add_argument(
        "--num-frames", type=int, default=None,
        help=f"frames per training clip, for the speed check (default: the recipe's, else {DEFAULT_NUM_FRAMES})",
    )
    parser.add_argument("--caption-ext", default="txt", help="extension of caption files (default txt)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="longest wait for one file (a clip on a hung disk is named, not waited for); 0: no limit")
    parser.add_argument("--trigger", default="", metavar="WORD",
                        help="the job's trigger_word: show which captions get it prepended (job.inject_trigger)")


def recipe_meta(name: str) -> dict[str, Any]:
    """The recipe's ``[meta]`` advice (+ its dataset num_frames) from presets/<name>.toml, else the fallback."""
    import tomllib

    out = dict(FALLBACK_ADVICE.get(name, {}))
    try:
        from wanlora import presets

        path = Path(presets.__file__).parent / f"{name}.toml"
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (ImportError, OSError, ValueError):
        return out
    meta = data.get("meta", {})
    for k in ("clips_min", "clips_max", "clips_recommended", "clip_seconds", "clip_advice", "caption_advice"):
        if k in meta:
            out[k] = meta[k]
    nf = data.get("dataset", {}).get("num_frames")
    if isinstance(nf, int):
        out["num_frames"] = nf
    return out


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """decord logs C++ errors straight to fd 2; we report them ourselves, by name, so hide its copy."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _fmt_size(c: Any) -> str:
    return f"{c.width}x{c.height}" if c.width else "-"


def _trigger_summary(report: Any, trigger: str) -> dict[str, Any]:
    """Which captions already hold the trigger (or ``[trigger]``) and which get it prepended at training."""
    from wanlora.engine.data.captions import TRIGGER, has_trigger, substitute_trigger

    word = trigger.strip()
    uses_token = [c.path.name for c in report.usable if c.caption and TRIGGER in c.caption.lower()]
    if not word:
        return {"word": "", "uses_token": uses_token, "has": [], "prepended": []}
    has = [c.path.name for c in report.usable if has_trigger(substitute_trigger(c.caption or "", word), word)]
    prepended = [c.path.name for c in report.usable if c.path.name not in set(has)]
    return {"word": word, "uses_token": uses_token, "has": has, "prepended": prepended}


def caption_hint(folder: Path, preset: str | None, trigger: str = "") -> str:
    """The ``wanlora caption`` line for this folder in the recipe's style."""
    recipe = preset if preset in ("motion", "style", "character") else "motion"
    line = f"wanlora caption {shlex.quote(str(folder))} --recipe {recipe}"
    if recipe == "character":
        line += (f" --trigger {shlex.quote(trigger)}" if trigger else "") + ' --class "young woman"'
    return line


def build_summary(report: Any, preset: str | None, num_frames: int, trigger: str = "") -> dict[str, Any]:
    """Everything the text and JSON outputs say, as data."""
    from wanlora.engine.data.frames import SPEEDUP_WARN, TARGET_FPS, even_speedup, max_even_duration

    usable = report.usable
    too_fast = []
    for c in report.videos:
        s = even_speedup(c.duration_s, num_frames)
        if s > SPEEDUP_WARN:
            too_fast.append({"file": c.path.name, "duration_s": round(c.duration_s, 2), "speedup": round(s, 2)})
    out: dict[str, Any] = {
        "folder": str(report.folder),
        "usable": len(usable),
        "videos": len(report.videos),
        "images": len(report.images),
        "unreadable": [{"file": c.path.name, "error": c.error} for c in report.unreadable],
        "missing_captions": [c.path.name for c in report.missing_captions],
        "total_duration_s": round(report.total_duration_s, 2),
        "sizes": dict(Counter(_fmt_size(c) for c in usable).most_common()),
        "fps": dict(Counter(f"{c.fps:g}" for c in report.videos).most_common()),
        "ignored": [p.name for p in report.ignored],
        "skipped": [{"file": p.name, "kind": what} for p, what in report.skipped],
        "num_frames": num_frames,
        "too_fast": too_fast,
        "max_even_duration_s": round(max_even_duration(num_frames), 2),
        "target_fps": TARGET_FPS,
        "trigger": _trigger_summary(report, trigger),
        "advice": [],
    }
    advice: list[str] = out["advice"]
    trig = out["trigger"]
    if trig["word"] and trig["prepended"]:
        advice.append(
            f"{len(trig['prepended'])} of {len(usable)} caption(s) lack the trigger {trig['word']!r}: training prepends it "
            f"(\"{trig['word']} <caption>\", as ai-toolkit does); set job.inject_trigger = false to train them as written.")
    elif not trig["word"] and trig["uses_token"]:
        advice.append(f"{len(trig['uses_token'])} caption(s) use [trigger]: set job.trigger_word in the job "
                      "(pass --trigger WORD here to see every caption as it will train).")
    if preset:
        meta = recipe_meta(preset)
        lo, hi = meta.get("clips_min"), meta.get("clips_max")
        out["preset"] = {"name": preset, "clips_min": lo, "clips_max": hi, "clip_advice": meta.get("clip_advice", "")}
        n = len(usable)
        if lo is not None and n < lo:
            advice.append(f"{n} usable clips/images: the {preset} recipe wants {lo}-{hi}; add {lo - n} or more. {meta.get('clip_advice', '')}".strip())
        elif hi is not None and n > hi:
            advice.append(f"{n} usable clips/images: more than the {preset} recipe's {lo}-{hi}; fine, but steps may need raising.")
        else:
            advice.append(f"{n} usable clips/images: within the {preset} recipe's {lo}-{hi}.")
    if too_fast:
        advice.append(
            f"{len(too_fast)} clip(s) are longer than {max_even_duration(num_frames):.1f} s: with frame_sampling = \"even\" "
            f"and {num_frames} frames their motion plays more than {SPEEDUP_WARN:g}x too fast (ai-toolkit #421). "
            "Use frame_sampling = \"fps\" (real speed, 16 fps) or trim them."
        )
    if out["missing_captions"]:
        advice.append(
            f"{len(out['missing_captions'])} file(s) have no .txt caption: they get default_caption (set one in the job), "
            f"or caption them on a GPU: {caption_hint(report.folder, preset, trigger)}"
        )
    if report.skipped:
        advice.append(f"{len(report.skipped)} entr(ies) are FIFOs, sockets or devices and were not read; remove them.")
    if report.unreadable:
        advice.append(f"{len(report.unreadable)} unreadable file(s) will be skipped; re-export or remove them.")
    if not usable:
        advice.append("No usable clip or image: training would have nothing to learn from.")
    return out


def _print_text(report: Any, summary: dict[str, Any], num_frames: int) -> None:
    from wanlora.engine.data.frames import even_speedup

    rows = [("file", "kind", "seconds", "fps", "frames", "size", "caption", f"speed@{num_frames}f")]
    prepended = set(summary["trigger"]["prepended"])
    for c in report.items:
        if not c.ok:
            continue
        cap = "yes" if c.caption else ("empty" if c.caption == "" else "NO")
        if c.path.name in prepended:
            cap += "+trigger"
        if c.kind == "video":
            rows.append((c.path.name, "video", f"{c.duration_s:.2f}", f"{c.fps:g}", str(c.frames), _fmt_size(c), cap,
                         f"{even_speedup(c.duration_s, num_frames):.2f}x"))
        else:
            rows.append((c.path.name, "image", "-", "-", "1", _fmt_size(c), cap, "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows if len(rows) > 1 else []:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    if report.unreadable:
        print("\nunreadable (skipped):")
        for c in report.unreadable:
            print(f"  {c.path.name}: {c.error}")
    if report.skipped:
        print("\nnot regular files (never read):")
        for p, what in report.skipped:
            print(f"  {p.name}: {what}")
    if report.ignored:
        print(f"\nignored (not a clip, image or caption): {', '.join(p.name for p in report.ignored)}")
    s = summary
    print(
        f"\n{s['usable']} usable ({s['videos']} clips, {s['images']} images), {s['total_duration_s']:.1f} s of video; "
        f"{len(s['unreadable'])} unreadable; {len(s['missing_captions'])} without caption."
    )
    if s["sizes"]:
        print("sizes: " + ", ".join(f"{k} ×{v}" for k, v in s["sizes"].items()))
    if s["fps"]:
        print("fps: " + ", ".join(f"{k} ×{v}" for k, v in s["fps"].items()))
    for line in s["advice"]:
        print("- " + line)


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.data.captions import training_caption
    from wanlora.engine.data.scan import ScanError
    from wanlora.tui.commands._scan_limit import scan_folder

    num_frames = args.num_frames
    if num_frames is None:
        num_frames = recipe_meta(args.preset).get("num_frames", DEFAULT_NUM_FRAMES) if args.preset else DEFAULT_NUM_FRAMES
    if num_frames < 1:
        print("--num-frames must be at least 1", file=sys.stderr)
        return 2
    try:
        with _quiet_stderr():
            report = scan_folder(args.folder, caption_ext=args.caption_ext, limit_s=args.timeout)
    except ScanError as e:
        if args.json:
            print(json.dumps({"folder": args.folder, "error": str(e), "usable": 0}))
        else:
            print(f"error: {e}", file=sys.stderr)
        return 1
    summary = build_summary(report, args.preset, num_frames, trigger=args.trigger)
    if args.json:
        summary["items"] = [
            {
                "file": c.path.name, "kind": c.kind, "frames": c.frames, "fps": c.fps,
                "duration_s": round(c.duration_s, 3), "width": c.width, "height": c.height,
                "caption": c.caption, "error": c.error,
                **({"training_caption": training_caption(c.caption or "", args.trigger)} if args.trigger else {}),
            }
            for c in report.items
        ]
        print(json.dumps(summary, indent=2))
    else:
        _print_text(report, summary, num_frames)
    return 0 if report.usable else 1
