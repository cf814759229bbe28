"""The ``wanlora`` command: parse, dispatch to one module per verb, print; errors are caught here once.

Each verb lives in ``wanlora_tui/commands/<verb>.py`` with ``HELP``, ``add_arguments(parser, verb)`` and
``run(args) -> int``.  Command modules keep heavy imports (torch, textual) inside ``run`` so that
``wanlora status`` and ``wanlora validate`` start fast and never load torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

# verb -> module under wanlora.tui.commands (several verbs may share one module via its VERBS dict)
COMMANDS: dict[str, str] = {
    # foundation
    "validate": "validate",
    "show": "show",
    "presets": "presets",
    "scan": "scan",
    "caption": "caption",
    "import-aitk": "import_aitk",
    "estimate": "estimate",
    # engine
    "demo": "demo",
    "cache": "cache",
    "sample": "sample",
    "trial": "trial",
    "model": "model",
    "compare": "compare",
    "slurm": "slurm",
    # daemon control
    "submit": "submit",
    "status": "status",
    "logs": "logs",
    "cancel": "control",
    "pause": "control",
    "resume": "control",
    "retry": "control",
    "remove": "control",
    "save-now": "control",
    "sample-now": "control",
    "priority": "control",
    "edit": "edit",
    "push": "push",
    "wait": "wait",
    "clean": "clean",
    "daemon": "daemon",
    "doctor": "doctor",
    # TUI
    "new": "new",
    "attach": "attach",
}

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def _load(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"wanlora.tui.commands.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"wanlora.tui.commands.{module}":
            return None  # verb not built yet: hidden from the parser
        raise


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wanlora")
    except PackageNotFoundError:
        return "unknown (not installed; `pip install -e .`)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wanlora",
        description="Train Wan 2.2 I2V LoRAs: wizard, daemon and trainer. Run without arguments for the TUI.",
    )
    parser.add_argument("--version", action="version", version=f"wanlora {_version()}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb, module in COMMANDS.items():
        mod = _load(module)
        if mod is None:
            continue
        helps = getattr(mod, "VERB_HELP", {})
        p = sub.add_parser(verb, help=helps.get(verb, getattr(mod, "HELP", "")))
        mod.add_arguments(p, verb)
        p.set_defaults(_module=mod, verb=verb)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        mod = _load("home")  # no verb: dashboard if jobs exist, else the wizard
        if mod is None:
            parser.print_help()
            return EXIT_USAGE
        return int(mod.run(argparse.Namespace()) or 0)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return EXIT_USAGE
    from wanlora.engine.config.findings import JobError

    try:
        return int(args._module.run(args) or 0)
    except JobError as e:
        for f in e.findings:
            print(str(f), file=sys.stderr)
        return EXIT_ERRORS
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
