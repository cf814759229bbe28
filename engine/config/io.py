"""Job files in and out: TOML text ↔ plain dict ↔ :class:`Job`, with user-facing errors.

Schema errors (unknown key, wrong type, out of range) become :class:`Finding` objects that name the key,
say what is wrong and how to fix it, including a "did you mean" for misspelt keys.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError
from wanlora.engine.config.findings import Finding, JobError
from wanlora.engine.config.schema import Job, all_keys, compact_shorthand

MAX_JOB_BYTES = 1_000_000
MAX_DEPTH = 16  # a job file nests at most 3 levels (sample.prompts[].seed); tomllib is quadratic in key depth


def nesting_depth(text: str) -> int:
    """The deepest nesting in TOML text (dotted-key parts or ``[``/``{`` levels), found in one linear pass.

    Run before :func:`tomllib.loads`, which takes seconds on a 20,000-part dotted key and recurses on
    deep arrays.  Strings and comments are skipped; the count is an upper bound, never an underestimate.
    """
    depth = deepest = dots = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\"'":
            triple = text.startswith(c * 3, i)
            end = c * 3 if triple else c
            j = i + len(end)
            while j < n:
                if c == '"' and text[j] == "\\":
                    j += 2
                    continue
                if text.startswith(end, j):
                    break
                if not triple and text[j] == "\n":
                    break
                j += 1
            i = j + len(end)
            continue
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth + dots)
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c == ".":
            dots += 1
            deepest = max(deepest, depth + dots + 1)
        elif c in "\n=,{":
            dots = 0
        i += 1
    return deepest


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
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise JobError([Finding("error", source, f"the file is nested {depth} levels deep (limit {MAX_DEPTH}); "
                                "a job file is nested at most 3 levels",
                                "write plain [section] tables with key = value lines (`wanlora show` lists the keys)")])
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise JobError([Finding("error", source, "the file is nested too deeply to be a job file",
                                "write plain [section] tables with key = value lines")]) from None
    except tomllib.TOMLDecodeError as e:
        raise JobError([Finding("error", source, f"not valid TOML: {e}", "fix the syntax at that line")]) from None


def _loc_to_key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-after", "literal[", "list[", "int", "float", "bool", "str", "nullable")) and out:
            continue  # pydantic union branch names are noise for a user
        else:
            out += ("." if out else "") + str(part)
    return out


def suggest_key(key: str) -> str:
    """'Did you mean …' for an unknown dotted key; list indices of ``key`` are kept in the suggestion."""
    bare = re.sub(r"\[\d+\]", "", key)
    known = all_keys()
    if "." not in bare:  # a misspelt [section], or a key written outside its section: never a fuzzy dotted key
        sections = sorted({k.split(".")[0] for k in known})
        m = difflib.get_close_matches(bare, sections, n=1, cutoff=0.6)
        if m:
            return m[0]
        exact = [k for k in known if k.rsplit(".", 1)[-1] == bare]  # `steps = 10` above [training]
        return exact[0] if exact else ""
    close = difflib.get_close_matches(bare, known, n=1, cutoff=0.6)
    if not close:
        head, _, leaf = bare.rpartition(".")
        same_table = [k for k in known if k.rpartition(".")[0] == head]
        m = difflib.get_close_matches(leaf, [k.rpartition(".")[2] for k in same_table], n=1, cutoff=0.6)
        if m:
            close = [f"{head}.{m[0]}" if head else m[0]]
        else:
            leaves = {k.rsplit(".", 1)[-1]: k for k in known}
            m = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
            close = [leaves[m[0]]] if m else []
    if not close:
        return ""
    return _reindex(close[0], key)


def _reindex(suggestion: str, original: str) -> str:
    """Put the list indices of ``original`` (``datasets[2].x``) back into ``suggestion`` (``datasets.y``)."""
    out = suggestion
    for m in re.finditer(r"([A-Za-z_]+)\[(\d+)\]", original):
        out = re.sub(rf"(^|\.){m.group(1)}(?=\.|$)", rf"\g<1>{m.group(1)}[{m.group(2)}]", out, count=1)
    return out


def findings_from_validation_error(err: ValidationError) -> list[Finding]:
    """One finding per key: pydantic's several union-branch errors for one value are merged into one."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for e in err.errors():
        by_key.setdefault(_loc_to_key(e["loc"]) or "job", []).append(e)
    out: list[Finding] = []
    for key, errs in by_key.items():
        if any(e["type"] == "extra_forbidden" for e in errs):
            s = suggest_key(key)
            fix = f"did you mean `{s}`?" if s else "remove it (`wanlora show` lists every key)"
            out.append(Finding("error", key, "unknown key", fix))
        elif len(errs) == 1:
            out.append(_one_finding(key, errs[0]))
        else:
            out.append(_union_finding(key, errs))
    return out


def _got(e: dict[str, Any]) -> str:
    got = e.get("input")
    return "" if isinstance(got, dict | list) else f" (got {got!r})"


def _one_finding(key: str, e: dict[str, Any]) -> Finding:
    if e["type"] == "value_error":
        msg = e["msg"].removeprefix("Value error, ")
        what, sep, fix = msg.partition("; ")
        if not sep:
            what, fix = msg, _help_fix(key)
        return Finding("error", key, f"{what}{_got(e)}", fix)
    return Finding("error", key, f"{e['msg']}{_got(e)}", _fix_for(e, key))


def _union_finding(key: str, errs: list[dict[str, Any]]) -> Finding:
    """A value that matched none of a union's branches ("auto" | 12 | 24 …): one message listing them all."""
    choices: list[str] = []
    for e in errs:
        if e["type"] == "literal_error":
            choices.append(str((e.get("ctx") or {}).get("expected", "")))
        elif e["type"] == "value_error":
            return _one_finding(key, e)  # the value had the right type but failed its own check
        else:
            choices.append(_TYPE_WORDS.get(e["type"], e["msg"].removeprefix("Input should be ")))
    allowed = " or ".join(c for c in choices if c)
    got = errs[0].get("input")
    fix = f"use {allowed}"
    if isinstance(got, str) and any(re.search(rf"\b{re.escape(got)}\b", c) and not c.startswith("'") for c in choices):
        fix = f"write {got} without quotes"
    return Finding("error", key, f"must be {allowed}{_got(errs[0])}", fix)


_TYPE_WORDS = {
    "list_type": "a list like [0, 1]",
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a quoted string",
}


def _help_fix(key: str) -> str:
    from wanlora.engine.config.schema import field_help

    h = field_help(key)
    return f"see its help: {h}" if h else "see `wanlora show` for the key's help"


def _fix_for(e: dict[str, Any], key: str = "") -> str:
    t = e["type"]
    ctx = e.get("ctx") or {}
    bounds = {"greater_than": "above {gt}", "greater_than_equal": "of at least {ge}",
              "less_than": "below {lt}", "less_than_equal": "of at most {le}"}
    if t in bounds:
        return "use a value " + bounds[t].format(**ctx)
    if t == "literal_error":
        return f"use one of {ctx.get('expected', 'the listed values')}"
    got = e.get("input")
    if t in ("int_type", "int_from_float") and isinstance(got, float):
        return f"write a whole number without a decimal point, e.g. {int(got) if got.is_integer() else round(got)}"
    if t == "bool_type" and isinstance(got, int | float) and not isinstance(got, bool):
        return "write true or false (not 0/1)"
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
    if t in ("too_short", "too_long"):
        return e["msg"].replace("List should", "give a list that should")
    if t == "multiple_of":
        m = ctx.get("multiple_of")
        got = e.get("input")
        if isinstance(got, int | float) and m:
            return f"use a multiple of {m}, e.g. {max(m, round(got / m) * m)}"
        return f"use a multiple of {m}"
    return _help_fix(key)


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
    return compact_shorthand(_drop_none(d))


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
    from wanlora.engine.config.jobdir import write_text_atomic

    write_text_atomic(Path(path), dump_job(job))
