"""Plain ``wanlora``: the dashboard when this home has jobs, else the wizard."""

from __future__ import annotations

import argparse
import os

HELP = "dashboard if any job exists, else the wizard"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "") -> None:
    pass


def ssh_friendly_env() -> None:
    """Fewer redraws over SSH: no animations, 30 fps at most (the user's own settings win)."""
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
    os.environ.setdefault("TEXTUAL_FPS", "30")


def run(args: argparse.Namespace) -> int:
    ssh_friendly_env()
    from wanlora.tui.app import WanloraApp

    return int(WanloraApp(start="home").run() or 0)
