"""Where wanlora keeps its things: ``$WANLORA_HOME``, else ``$XDG_DATA_HOME/wanlora`` (~/.local/share/wanlora).

Rented GPU containers lose their root disk on restart: there, set WANLORA_HOME=/workspace/wanlora.
"""

from __future__ import annotations

import os
from pathlib import Path


def wanlora_home() -> Path:
    env = os.environ.get("WANLORA_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "wanlora"


def models_dir() -> Path:
    return wanlora_home() / "models"


def tiny_model_dir() -> Path:
    """The built-in tiny random Wan 2.2 I2V model (built on first use by ``engine.model.tiny``)."""
    return models_dir() / "tiny-wan22-i2v"


def configured_output_roots(home: Path | None = None) -> list[Path]:
    """``output_roots`` from ``<home>/config.toml`` (the daemon's settings file), ``[]`` when unset or unreadable.

    Read here, torch- and daemon-free, so ``wanlora validate`` applies the same output_dir policy as the daemon.
    """
    import tomllib

    path = (home or wanlora_home()) / "config.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if isinstance(data.get("daemon"), dict):
        data = {**data, **data["daemon"]}
    roots = data.get("output_roots", [])
    return [Path(r).expanduser() for r in roots if isinstance(r, str) and r.strip()] if isinstance(roots, list) else []
