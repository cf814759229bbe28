"""Small helpers shared by the daemon verbs (submit, status, logs, control, daemon)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from wanlora.daemon.home import Home


def add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=None, metavar="DIR",
                        help="wanlora home (default: $WANLORA_HOME, else ~/.local/share/wanlora)")


def home_of(args: argparse.Namespace) -> Home:
    return Home.resolve(getattr(args, "home", None))


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
