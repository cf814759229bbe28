"""Job files in and out: TOML text ↔ plain dict ↔ :class:`Job`, with user-facing errors.

Schema errors (unknown key, wrong type, out of range) become :class:`Finding` objects that name the key,
say what is wrong and how to fix it, including a "did you mean" for misspelt keys.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from engine.config.findings import Finding, JobError
from engine.config.schema import Job, all_keys

MAX_JOB_BYTES = 1_000_000


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a broken or oversized file raises JobError naming the file and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JobError([Finding("error", str(path), "file not found", "check the path")]) from None
    except OSError as e:
        raise JobError([Finding("error", str(path), f"cannot read the file ({e.strerror})", "check its permissions")]) from None
    return parse_toml(raw, str(path))


def parse_toml(raw: bytes | str, source: str = "job.toml") -> dict[str, Any]:
    if isinstance(raw, str):
        raw = raw.encode()
    if len(raw) > MAX_JOB_BYTES:
        raise JobError([Finding("error", source, f"the file is {len(raw)} bytes; a job file is a few KB",
                                "point at the job's .toml, not a data file")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JobError([Finding("error", source, "the file is not UTF-8 text", "save the job file as UTF-8 TOML")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise JobError([Finding("error", source, f"not valid TOML: {e}", "fix the syntax at that line")]) from None


def _loc_to_key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-after", "literal[", "list[", "int", "float", "bool", "str")) and out:
            continue  # pydantic union branch names are noise for a user
        else:
            out += ("." if out else "") + str(part)
    return out


def suggest_key(key: str) -> str:
    """'Did you mean …' for an unknown dotted key (list indices ignored)."""
    import re

    bare = re.sub(r"\[\d+\]", "", key)
    known = all_keys()
    close = difflib.get_close_matches(bare, known, n=1, cutoff=0.6)
    if not close:
        leaf = bare.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in known}
        m = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        close = [leaves[m[0]]] if m else []
    return close[0] if close else ""


def findings_from_validation_error(err: ValidationError) -> list[Finding]:
    out: list[Finding] = []
    seen: set[str] = set()
    for e in err.errors():
        key = _loc_to_key(e["loc"]) or "job"
        if e["type"] == "extra_forbidden":
            s = suggest_key(key)
            fix = f"did you mean `{s}`?" if s else "remove it (see `wanlora show` for every key)"
            f = Finding("error", key, "unknown key", fix)
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            got_s = "" if isinstance(got, dict | list) else f" (got {got!r})"
            f = Finding("error", key, f"{msg}{got_s}", _fix_for(e))
        if f.key + f.message not in seen:
            seen.add(f.key + f.message)
            out.append(f)
    return out


def _fix_for(e: dict[str, Any]) -> str:
    t = e["type"]
    ctx = e.get("ctx") or {}
    if t.startswith("greater_than") or t.startswith("less_than"):
        return "set a value in the allowed range"
    if t == "literal_error":
        return f"use one of {ctx.get('expected', 'the listed values')}"
    if t in ("int_parsing", "int_type", "int_from_float"):
        return "write a whole number without quotes"
    if t in ("float_parsing", "float_type"):
        return "write a number without quotes"
    if t in ("bool_parsing", "bool_type"):
        return "write true or false without quotes"
    if t in ("string_type",):
        return "write the value in quotes"
    if t in ("list_type",):
        return "write a list, e.g. [512, 768]"
    if t == "multiple_of":
        return f"use a multiple of {ctx.get('multiple_of')}"
    return "see the key's help in `wanlora show`"


def job_from_dict(data: dict[str, Any], source: str = "job.toml") -> Job:
    try:
        return Job.model_validate(data)
    except ValidationError as e:
        raise JobError(findings_from_validation_error(e), source) from None


def load_job(path: Path) -> Job:
    """A job file exactly as written (no presets applied): see ``presets.resolve_file`` for that."""
    return job_from_dict(read_toml(path), str(path))


def job_to_dict(job: Job, *, exclude_defaults: bool = False) -> dict[str, Any]:
    """Plain TOML-ready dict (None values dropped: TOML has no null)."""
    d = job.model_dump(mode="json", exclude_defaults=exclude_defaults)
    return _drop_none(d)


def _drop_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x


def dump_job(job: Job, *, exclude_defaults: bool = False) -> str:
    """TOML text; ``load(dump(job)) == job`` (round-trip stable)."""
    return tomli_w.dumps(job_to_dict(job, exclude_defaults=exclude_defaults))


def save_job(job: Job, path: Path) -> None:
    from engine.config.jobdir import write_text_atomic

    write_text_atomic(Path(path), dump_job(job))
