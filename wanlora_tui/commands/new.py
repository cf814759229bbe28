"""``wanlora new [--preset motion|style|character] [--from JOB.toml | --draft]``: the wizard.

The wizard keeps what you typed in ``<home>/wizard-draft.toml`` (on every step, on quit, when the SSH
session drops); ``--draft`` continues from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "the wizard: pick a recipe and GPU tier, edit every panel, review, submit"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "") -> None:
    parser.add_argument("--preset", choices=("motion", "style", "character", "custom"),
                        help="start from this recipe (skips the recipe step)")
    parser.add_argument("--from", dest="from_file", type=Path, metavar="JOB.toml",
                        help="start from an existing job file (its values count as yours)")
    parser.add_argument("--draft", action="store_true", help="continue the draft the wizard kept when it was left")


def run(args: argparse.Namespace) -> int:
    from wanlora.tui.commands.home import ssh_friendly_env

    ssh_friendly_env()
    import sys

    from wanlora.engine.config.paths import wanlora_home
    from wanlora.tui.app import DRAFT, WanloraApp

    if args.draft:
        draft = wanlora_home() / DRAFT
        if not draft.is_file():
            print(f"wanlora new: no draft at {draft}; `wanlora new` starts a new job", file=sys.stderr)
            return 2
        args.from_file = draft
    if args.from_file is not None and not args.from_file.is_file():
        print(f"wanlora new: {args.from_file} does not exist", file=sys.stderr)
        return 2
    app = WanloraApp(start="wizard", recipe=args.preset, from_file=args.from_file)
    return int(app.run() or 0)
