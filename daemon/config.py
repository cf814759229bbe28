"""Daemon settings from ``<home>/config.toml`` (never in job files, which must stay data).

```toml
callback = "curl -s -d \"wanlora $WANLORA_JOB_ID: $WANLORA_STATE $WANLORA_REASON\" ntfy.sh/my-topic"
max_restarts = 3          # crashes in a row without progress before a job is failed instead of requeued
rescan_interval_s = 5.0   # full spool rescan (inotify only speeds things up)
cpu_slots = 1             # concurrent jobs on a machine without a GPU
cancel_grace_s = 120.0    # SIGTERM, then SIGKILL after this long
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """config.toml is broken; the message names the key and the fix."""


@dataclass
class DaemonConfig:
    callback: str = ""
    callback_timeout_s: float = 60.0
    max_restarts: int = 3
    rescan_interval_s: float = 5.0
    settle_s: float = 1.0  # a plain file dropped into spool/ must be unchanged this long (and over two scans)
    poll_interval_s: float = 1.0  # how often running jobs are checked
    cpu_slots: int = 1
    cancel_grace_s: float = 120.0
    max_job_file_bytes: int = 50 * 1024 * 1024

    @classmethod
    def load(cls, path: Path) -> DaemonConfig:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML ({e}); fix or delete the file") from None
        if isinstance(data.get("daemon"), dict):  # accept a [daemon] table too
            data = {**{k: v for k, v in data.items() if k != "daemon"}, **data["daemon"]}
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config.toml") -> DaemonConfig:
        known = {f.name: f for f in fields(cls)}
        out = cls()
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
            want = type(getattr(out, key))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want) or isinstance(value, bool):
                raise ConfigError(f"{source}: {key} must be a {want.__name__}, got {value!r}")
            if want in (int, float) and value < 0:
                raise ConfigError(f"{source}: {key} must not be negative (got {value})")
            setattr(out, key, value)
        if out.rescan_interval_s < 0.05 or out.poll_interval_s < 0.05:
            raise ConfigError(f"{source}: rescan_interval_s and poll_interval_s must be at least 0.05")
        return out
