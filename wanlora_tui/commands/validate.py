"""``wanlora validate JOB.toml``: the guide's troubleshooting before a GPU is touched (never imports torch)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "check a job file: errors (job refused), warnings and info, each with its key and the fix"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "validate") -> None:
    parser.add_argument("job", metavar="JOB.toml", help="the job file")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--vram", type=float, metavar="GIB", default=None,
                        help="check against this much free GPU memory instead of the detected GPU/tier")
    parser.add_argument("--anywhere", action="store_true",
                        help="skip the checks that this machine can run the job (fp8/nf4 need CUDA, adamw8bit "
                             "bitsandbytes): for a job written here to run on a GPU machine")


def format_findings(findings: list, *, width: int | None = None) -> str:
    """Findings as readable text: level + key on one line, then what is wrong and the fix, indented, wrapped
    on word boundaries at ``width`` (default: the terminal's, so an 80-column session never folds a word)."""
    from wanlora.tui.term import terminal_width, wrap

    width = terminal_width() if width is None else width
    lines: list[str] = []
    for f in findings:
        lines.append(f"{f.level.upper():<8}{f.key}")
        lines += wrap(f.message, width, indent="        ")
        if f.fix:
            lines += wrap(f"fix: {f.fix}", width, indent="        ", subsequent_indent="             ")
    return "\n".join(lines)


def summary(findings: list) -> dict[str, int]:
    return {lvl: sum(1 for f in findings if f.level == lvl) for lvl in ("error", "warning", "info")}


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.checks.validate import check_file

    path = Path(args.job)
    if not path.is_file():
        print(f"wanlora validate: {path}: no such file", file=sys.stderr)
        return 2
    resolved, findings = check_file(path, vram_gb=args.vram, machine=False if args.anywhere else None)
    n = summary(findings)
    if args.json:
        out = {"file": str(path), "ok": n["error"] == 0, **{f"{k}s": v for k, v in n.items()},
               "recipe": resolved.recipe if resolved else None, "tier": resolved.tier if resolved else None,
               "findings": [f.to_dict() for f in findings]}
        print(json.dumps(out, indent=2))
    else:
        if findings:
            print(format_findings(findings))
            print()
        ctx = ""
        if resolved is not None:
            tier = f"{resolved.tier} GB tier ({resolved.tier_source})" if resolved.tier else "no VRAM tier"
            ctx = f" [recipe: {resolved.recipe or 'custom'}, {tier}]"
        verdict = "job refused" if n["error"] else "ok"
        from wanlora.tui.term import terminal_width, wrap

        width = terminal_width()
        rest = f"{verdict}: {n['error']} error(s), {n['warning']} warning(s), {n['info']} info{ctx}"
        if len(f"{path}: {rest}") <= width:
            print(f"{path}: {rest}")
        else:  # the file on its own line, the verdict whole on the next (wrapped only on a very narrow terminal)
            print(f"{path}:\n" + "\n".join(wrap(rest, width, indent="  ")))
    return 1 if n["error"] else 0
