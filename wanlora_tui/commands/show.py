"""``wanlora show JOB.toml``: the fully resolved job, each value with where it came from.

The text output is valid TOML (origins are comments), so ``wanlora show job.toml > full.toml`` freezes
every value the job will run with.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "the fully resolved job (recipe + VRAM tier + your file) with each value's origin"


def add_arguments(parser: argparse.ArgumentParser, verb: str = "show") -> None:
    parser.add_argument("job", metavar="JOB.toml", help="the job file")
    parser.add_argument("--json", action="store_true", help="print {job, origins, recipe, tier} as JSON")
    parser.add_argument("--tier", choices=["auto", "12", "24", "32", "48", "80", "141"], default=None,
                        help="resolve for this VRAM tier instead of the file's job.vram_tier")
    parser.add_argument("--preset", choices=["motion", "style", "character", "custom"], default=None,
                        help="resolve with this recipe instead of the file's job.preset")


def _value(v: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": v}).strip().removeprefix("v = ")


def field_help(key: str) -> str:
    from wanlora.engine.config.schema import field_help as help_of

    return help_of(key)


def _table(lines: list[str], header: str, data: dict[str, Any], prefix: str, origins: dict[str, str],
           width: int) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))}
    lines.append(header)
    for k, v in scalars.items():
        key = f"{prefix}{k}"
        if v is None:
            lines.append(f"# {k} = (empty)".ljust(width) + f"  # {origins.get(key, 'default')}: {field_help(key)}")
            continue
        text = f"{k} = {_value(v)}"
        lines.append(f"{text.ljust(width)}  # {origins.get(key, 'default')}")
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append("")
            _table(lines, f"[{header.strip('[]')}.{k}]", v, f"{prefix}{k}.", origins, width)


def render(job_dict: dict[str, Any], origins: dict[str, str], width: int = 48) -> str:
    """TOML text of the resolved job with ``# origin`` beside every value."""
    lines: list[str] = []
    for section, value in job_dict.items():
        if section == "datasets":
            for i, d in enumerate(value):
                if lines:
                    lines.append("")
                _table(lines, "[[datasets]]", d, f"datasets[{i}].", origins, width)
            continue
        if lines:
            lines.append("")
        prompts = value.pop("prompts", []) if section == "sample" else []
        _table(lines, f"[{section}]", value, f"{section}.", origins, width)
        for i, p in enumerate(prompts):
            lines.append("")
            _table(lines, "[[sample.prompts]]", p, f"sample.prompts[{i}].", origins, width)
    return "\n".join(lines) + "\n"


def summary_lines(job: Any, origins: dict[str, str]) -> list[str]:
    """Comment lines for what the table alone does not say: the trigger rule and each expert's settings."""
    from wanlora.engine.config.schema import expert_plan
    from wanlora.engine.data.captions import trigger_rule

    out: list[str] = [f"# trigger: {trigger_rule(job.job.trigger_word, job.job.inject_trigger)}"]
    for e in job.multistage.trained():
        p = expert_plan(job, e)
        parts = []
        for k, v in p.settings().items():  # every row of engine.config.experts.EXPERT_SETTINGS
            src = p.sources[k]
            parts.append(f"{k} {_value(v)} ({src}, {origins.get(src, 'default')})")
        out.append(f"# {e} expert trains with: " + "; ".join(parts))
    from wanlora.engine.config.launch import describe_multi_gpu

    out += [f"# on {line}" for line in describe_multi_gpu(job)]  # advanced.multi_gpu

    return out


def run(args: argparse.Namespace) -> int:
    from wanlora.engine.config.presets import resolve_file

    tier = None if args.tier is None else (args.tier if args.tier == "auto" else int(args.tier))
    r = resolve_file(args.job, tier=tier, recipe=args.preset)
    dump = r.job.model_dump(mode="json")
    if args.json:
        print(json.dumps({"job": dump, "origins": r.origins, "recipe": r.recipe, "tier": r.tier,
                          "tier_source": r.tier_source}, indent=2))
        return 0
    tier = f"{r.tier} GB ({r.tier_source})" if r.tier else "none"
    print(f"# {args.job} resolved: recipe = {r.recipe or 'custom'}, VRAM tier = {tier}")
    print("# origin: default = schema default, recipe = presets/<recipe>.toml, tier = presets/tiers.toml, user = your file")
    for f in r.findings:
        print(f"# {f.message}")
    for line in summary_lines(r.job, r.origins):
        print(line)
    from wanlora.engine.model.weight_files import source_notes

    for line in source_notes(r.job.model):
        print(f"# model source: {line}")
    print()
    print(render(dump, r.origins), end="")
    return 0
