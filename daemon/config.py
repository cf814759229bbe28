"""Daemon settings from ``<home>/config.toml`` (never in job files, which must stay data).

```toml
callback = "curl -s -d \"wanlora $WANLORA_JOB_ID: $WANLORA_STATE $WANLORA_REASON\" ntfy.sh/my-topic"
max_restarts = 3          # crashes in a row without progress before a job is failed instead of requeued
rescan_interval_s = 5.0   # full spool rescan (inotify only speeds things up)
cpu_slots = 1             # concurrent jobs on a machine without a GPU
cancel_grace_s = 120.0    # SIGTERM, then SIGKILL after this long
intake_timeout_s = 120.0  # a job file (and its dataset scan) that takes longer to check is rejected
output_roots = ["/workspace/loras"]  # folders besides the home that job.output_dir may point into
push_attempts = 5         # tries of a Hub upload ([save] push_to_hub) before it is marked failed
push_backoff_s = 60.0     # wait before the 2nd try, doubled each time up to push_backoff_max_s
push_timeout_s = 14400.0  # one upload attempt is stopped after this long
```

The file must belong to the daemon's user and not be writable by others: it names a command the
daemon runs, so a file someone else could write is refused (with the fix), never trusted.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field, fields
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
    intake_timeout_s: float = 120.0
    output_roots: list[str] = field(default_factory=list)
    push_attempts: int = 5  # Hub uploads (daemon.hub_push): tries, first backoff (doubled per try), its cap, one try's limit
    push_backoff_s: float = 60.0
    push_backoff_max_s: float = 1800.0
    push_timeout_s: float = 14400.0

    @classmethod
    def load(cls, path: Path) -> DaemonConfig:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return cls()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            trust_problem(path, st)
            raw = f.read(1_000_001)
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
            if key == "output_roots":
                if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith("/") for v in value):
                    raise ConfigError(f'{source}: output_roots must be a list of absolute folders, e.g. ["/workspace/loras"]')
                out.output_roots = list(value)
                continue
            want = type(getattr(out, key))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want) or isinstance(value, bool):
                raise ConfigError(f"{source}: {key} must be a {want.__name__}, got {value!r}")
            if want in (int, float) and value < 0:
                raise ConfigError(f"{source}: {key} must not be negative (got {value})")
            setattr(out, key, value)
        if out.push_attempts < 1 or out.push_timeout_s <= 0:
            raise ConfigError(f"{source}: push_attempts must be at least 1 and push_timeout_s above 0")
        if out.rescan_interval_s < 0.05 or out.poll_interval_s < 0.05:
            raise ConfigError(f"{source}: rescan_interval_s and poll_interval_s must be at least 0.05")
        return out


def trust_problem(path: Path, st: os.stat_result) -> None:
    """Raise ConfigError unless config.toml is a regular file of the daemon's uid that others cannot write."""
    from wanlora.daemon.trust import untrusted

    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path} is not a regular file; make it a plain TOML file")
    bad = untrusted(st)
    if bad is not None:
        raise ConfigError(bad.refusal(
            str(path), runs=f"its callback would run as {bad.me}, so it is not trusted",
            fix_owner=f"write your own config (rm {path}, then recreate it), or chown {bad.me} {path} if it is yours",
            could_change="the callback the daemon runs", fix_mode=f"chmod 600 {path}"))
