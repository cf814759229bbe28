"""``wanlora daemon start|stop|status|run|install-service``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from wanlora.tui.commands._daemon_common import add_home, duration, home_of

HELP = "start/stop the background daemon (survives logout), show its status, or install a systemd unit"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "daemon") -> None:
    parser.add_argument("action", choices=["start", "stop", "status", "run", "install-service"])
    parser.add_argument("--unit", type=Path, default=None, help="install-service: write the unit here instead")
    parser.add_argument("--print", dest="print_only", action="store_true", help="install-service: only print the unit")
    add_home(parser)


def run(args: argparse.Namespace) -> int:
    from wanlora.daemon import service
    from wanlora.daemon.home import HomeError

    home = home_of(args)
    try:
        if args.action == "run":
            return service.run(home)
        if args.action == "start":
            pid, new = service.start(home)
            if new:
                print(f"daemon started (pid {pid}); home {home.root}; log {home.log}")
                from wanlora.daemon.home import network_fs_warning

                warn = network_fs_warning(home.root)
                if warn:
                    print(f"warning: {warn}", file=sys.stderr)
            else:
                print(f"daemon already running (pid {pid}); home {home.root}")
            return 0
        if args.action == "stop":
            pid, msg = service.stop(home)
            print(msg)
            return 0
        if args.action == "status":
            info = service.status(home)
            if info is None:
                print(f"daemon not running (home {home.root}); start it with `wanlora daemon start`")
                return 3
            counts = ", ".join(f"{n} {s}" for s, n in sorted((info.get("counts") or {}).items())) or "no jobs"
            print(f"daemon running (pid {info['pid']}, up {duration(info.get('uptime_s'))}); home {info['home']}")
            print(f"  slots: {', '.join(info.get('slots') or []) or 'none'}   jobs: {counts}")
            print(f"  started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.get('started', 0)))}")
            return 0
        if args.print_only:
            print(service.unit_text(home), end="")
            return 0
        path, hints = service.install_service(home, args.unit)
        print(f"wrote {path}")
        print("now run:")
        for h in hints:
            print(f"  {h}")
        return 0
    except (service.ServiceError, HomeError) as e:
        print(f"wanlora daemon {args.action}: {e}", file=sys.stderr)
        return 1
