"""Plain ``wanlora``: the dashboard when this home has jobs, else the wizard."""

from __future__ import annotations

import argparse

HELP = "dashboard if any job exists, else the wizard"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "") -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from wanlora_tui.app import WanloraApp

    return int(WanloraApp(start="home").run() or 0)
