"""``wanlora new [--preset motion|style|character] [--from JOB.toml]``: the wizard."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "the wizard: pick a recipe and GPU tier, edit every panel, review, submit"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "") -> None:
    parser.add_argument("--preset", choices=("motion", "style", "character", "custom"),
                        help="start from this recipe (skips the recipe step)")
    parser.add_argument("--from", dest="from_file", type=Path, metavar="JOB.toml",
                        help="start from an existing job file (its values count as yours)")


def run(args: argparse.Namespace) -> int:
    from wanlora.tui.commands.home import ssh_friendly_env

    ssh_friendly_env()
    from wanlora.tui.app import WanloraApp

    if args.from_file is not None and not args.from_file.is_file():
        print(f"wanlora new: {args.from_file} does not exist")
        return 2
    app = WanloraApp(start="wizard", recipe=args.preset, from_file=args.from_file)
    return int(app.run() or 0)
