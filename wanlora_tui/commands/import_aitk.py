"""``wanlora import-aitk CONFIG.yaml``: convert an ai-toolkit job config to a wanlora job file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "convert an ai-toolkit job config (.yaml / UI .json) to a wanlora job TOML"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "import-aitk") -> None:
    parser.add_argument("config", metavar="CONFIG.yaml", help="the ai-toolkit job config")
    parser.add_argument("-o", "--output", metavar="OUT.toml", default=None, help="write here instead of stdout")
    parser.add_argument("--preset", choices=["motion", "style", "character", "custom"], default=None,
                        help="record the recipe (job.preset) so its advice and checks apply")
    parser.add_argument("--force", action="store_true", help="overwrite OUT.toml if it exists")


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.config.aitk import convert_file, to_toml
    from wanlora.engine.config.io import job_from_dict

    conv = convert_file(args.config)
    if args.preset:
        conv.job.setdefault("job", {})["preset"] = args.preset
    text = to_toml(conv)
    job_from_dict(conv.job, args.config)  # a value our schema refuses -> JobError, printed by the CLI edge
    if args.output:
        out = Path(args.output)
        if out.exists() and not args.force:
            print(f"wanlora import-aitk: {out} exists; use --force to overwrite", file=sys.stderr)
            return 2
        from wanlora.engine.config.jobdir import write_text_atomic

        write_text_atomic(out, text)
        print(f"wrote {out}: {len(conv.notes)} note(s) on changed values and differences, {len(conv.defaults)} key(s) "
              f"the config left out set to ai-toolkit's own defaults, {len(conv.dropped)} key(s) not imported "
              f"(all listed at the top of the file); next: wanlora validate {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        for key, _, why in conv.dropped:
            print(f"not imported: {key}: {why}", file=sys.stderr)
    return 0
