"""The installed import names live under one ``wanlora`` namespace, so installing beside python-daemon (which
owns the top-level ``daemon``) or any other generic name breaks neither."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"engine": "wanlora.engine", "daemon": "wanlora.daemon", "presets": "wanlora.presets",
           "wanlora_tui": "wanlora.tui"}


def test_pyproject_lists_every_package_folder() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = set()
    for folder, ns in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            on_disk.add(ns + "".join("." + p for p in rel.parts))
    assert set(cfg["packages"]) == on_disk
    assert cfg["package-dir"] == {v: k for k, v in FOLDERS.items()}


def test_generic_top_level_names_are_not_ours(tmp_path: Path) -> None:
    """python-daemon (a test extra) owns the top-level ``daemon``; foreign ``engine``/``presets`` packages sit
    first on sys.path. Ours still import (CLI, daemon, engine, preset data) and the others stay intact."""
    for name in ("engine", "presets"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"FOREIGN = {name!r}\n")
    code = ("import daemon, engine, presets\n"
            "assert hasattr(daemon, 'DaemonContext') and engine.FOREIGN == 'engine' and presets.FOREIGN == 'presets'\n"
            "import wanlora.daemon.server, wanlora.engine.config.schema, wanlora.tui.cli\n"
            "from wanlora.engine.config.presets import load_recipe\n"
            "load_recipe('motion')\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
