"""Jobs submitted but not yet taken in by a daemon, read from the spool folder on the client side.

``wanlora submit`` with the daemon down (and the wizard, always) drops the job file into
``<home>/spool/new``; until a daemon claims it, it has no job id, but it exists: ``status``, the dashboard
and ``submit --parsable`` show it as "submitted, waiting for the daemon" under its **spool id** (the file's
stem, unique per submission).  Torch-free, read-only: the daemon's intake is the only writer that moves
these files.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

STATE = "submitted"
WAITING = "waiting for the daemon"
CLAIMING = "being taken in by the daemon"
IN_PROGRESS = (".part", ".tmp", ".swp", "~")


@dataclass(frozen=True)
class Spooled:
    spool_id: str
    name: str
    path: Path
    claimed: bool = False  # in spool/cur: a daemon is validating it right now

    @property
    def reason(self) -> str:
        return CLAIMING if self.claimed else WAITING

    def to_dict(self) -> dict[str, object]:
        return {"id": None, "spool_id": self.spool_id, "name": self.name, "state": STATE, "reason": self.reason,
                "file": str(self.path), "step": 0, "total_steps": 0}


def spool_id(path: Path) -> str:
    """A spool file's id: its name without ``.toml`` (and without the ``<ns>-`` a claim adds)."""
    name = Path(path).name
    head, sep, rest = name.partition("-")
    if Path(path).parent.name == "cur" and sep and head.isdigit():
        name = rest
    return name[:-5] if name.endswith(".toml") else name


def _name_of(path: Path, fallback: str) -> str:
    try:
        with open(path, "rb") as f:
            job = tomllib.load(f).get("job", {})
        name = job.get("name") if isinstance(job, dict) else None
        return str(name) if isinstance(name, str) and name else fallback
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError):
        return fallback


def _files(d: Path) -> list[Path]:
    try:
        names = os.listdir(d)
    except OSError:
        return []
    out = []
    for n in names:
        p = d / n
        if n.startswith(".") or n.endswith(IN_PROGRESS) or not p.is_file():
            continue
        out.append(p)
    return out


def spooled_jobs(home: Path) -> list[Spooled]:
    """Every job file waiting in ``spool/new``, dropped straight into ``spool/``, or being claimed; oldest first."""
    spool = Path(home) / "spool"
    found: list[tuple[float, Spooled]] = []
    for d, claimed in ((spool / "new", False), (spool, False), (spool / "cur", True)):
        for p in _files(d):
            if d == spool and p.suffix != ".toml":
                continue
            sid = spool_id(p)
            try:
                mtime = p.stat().st_mtime
            except OSError:
                continue
            found.append((mtime, Spooled(sid, _name_of(p, sid), p, claimed)))
    return [s for _, s in sorted(found, key=lambda x: (x[0], x[1].spool_id))]


def find_spooled(home: Path, ref: str) -> list[Spooled]:
    """Spooled jobs whose spool id, or name, is ``ref`` (a unique prefix of a spool id also counts)."""
    jobs = spooled_jobs(home)
    exact = [s for s in jobs if s.spool_id == ref or s.name == ref]
    return exact or [s for s in jobs if len(ref) >= 4 and s.spool_id.startswith(ref)]
