"""Recipes and VRAM tiers as layers under the user's job file, and where each value came from.

Layering, lowest first: schema defaults → recipe (``presets/<job.preset>.toml``) → VRAM tier
(``presets/tiers.toml``; "auto" = detected free VRAM) → the user's file.  A user value always wins; where a
tier and a recipe disagree the tier wins, because it is about what fits on the GPU.  Each layer's
``[dataset]`` table applies to every ``[[datasets]]`` entry.  ``origins`` maps every dotted key
(``training.learning_rate``, ``datasets[0].num_frames``, ``sample.prompts[0].ctrl_img``) to
``default | recipe | tier | user`` so the wizard and ``wanlora show`` can say who set what.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from wanlora.engine.config.findings import Finding, JobError
from wanlora.engine.config.io import job_from_dict, read_toml
from wanlora.engine.config.schema import RECIPES, VRAM_TIERS, Job, expand_shorthand

Origin = Literal["default", "recipe", "tier", "user"]
RECIPE_NAMES = tuple(r for r in RECIPES if r != "custom")
META_KEYS = ("meta",)  # recipe tables that are advice, not job keys
TIER_INFO_KEYS = ("title", "advice", "step_time_factor", "min_ram_gb")


@dataclass
class Resolved:
    """A job with presets applied: ``job`` is what runs; ``origins`` says where each value came from."""

    job: Job
    origins: dict[str, Origin]
    recipe: str | None = None  # None = custom (no recipe layer)
    tier: int | None = None  # None = no tier layer (auto without a GPU)
    tier_source: Literal["declared", "detected", "none"] = "none"
    detected_vram_gb: float | None = None
    findings: list[Finding] = field(default_factory=list)  # info lines about the layering itself


def presets_dir() -> Path:
    return Path(str(resources.files("wanlora.presets")))


@lru_cache(maxsize=8)
def _read_preset(name: str) -> dict[str, Any]:
    path = presets_dir() / f"{name}.toml"
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise JobError([Finding("error", "job.preset", f"preset file {path} is missing",
                                "reinstall wanlora (presets are package data)")]) from None


def list_recipes() -> list[str]:
    """The recipe names (``custom`` = none)."""
    return list(RECIPE_NAMES)


def load_recipe(name: str) -> dict[str, Any]:
    """A recipe as written: job sections, ``[dataset]`` (every dataset) and ``[meta]`` (advice)."""
    if name not in RECIPE_NAMES:
        raise JobError([Finding("error", "job.preset", f"unknown recipe {name!r}",
                                f"use one of {', '.join(RECIPES)}")])
    return copy.deepcopy(_read_preset(name))


def load_tiers() -> dict[int, dict[str, Any]]:
    """The VRAM tiers by size in GiB; each has ``title``/``advice`` plus job sections and ``[dataset]``."""
    raw = _read_preset("tiers").get("tier", {})
    return {int(k): copy.deepcopy(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}


def recipe_meta(name: str | None) -> dict[str, Any]:
    """The recipe's advice (clip counts, captions, trigger) or ``{}`` for custom."""
    return load_recipe(name).get("meta", {}) if name in RECIPE_NAMES else {}


def _job_layer(table: dict[str, Any], skip: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a recipe/tier table into (job sections, per-dataset defaults)."""
    sections = {k: v for k, v in table.items() if k not in skip and k != "dataset" and isinstance(v, dict)}
    return sections, dict(table.get("dataset", {}))


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, recursing into tables (lists are replaced whole)."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _user_recipe(user: dict[str, Any]) -> str | None:
    job = user.get("job")
    preset = job.get("preset", "custom") if isinstance(job, dict) else "custom"
    return preset if preset in RECIPE_NAMES else None


def _user_tier(user: dict[str, Any]) -> Any:
    job = user.get("job")
    return job.get("vram_tier", "auto") if isinstance(job, dict) else "auto"


def _pick_tier(requested: Any, user: dict[str, Any], detected_vram_gb: float | None,
               findings: list[Finding]) -> tuple[int | None, str, float | None]:
    if requested in VRAM_TIERS:
        return int(requested), "declared", detected_vram_gb
    if requested != "auto":
        return None, "none", detected_vram_gb  # a bad value: the schema check reports it
    from wanlora.engine.config import gpu

    if detected_vram_gb is None:
        job = user.get("job") if isinstance(user.get("job"), dict) else {}
        detected_vram_gb = gpu.free_vram_for(job.get("gpus", "auto"), gpu.detect_gpus())
    if detected_vram_gb is None:
        findings.append(Finding(
            "info", "job.vram_tier",
            "no NVIDIA GPU found here, so vram_tier = \"auto\" applied no tier settings",
            "set job.vram_tier (12, 24, 32, 48, 80 or 141) to see the settings for the GPU you will train on"))
        return None, "none", None
    tier = gpu.pick_tier(detected_vram_gb)
    findings.append(Finding("info", "job.vram_tier",
                            f"{detected_vram_gb:.1f} GiB free on the GPU: using the {tier} GB tier", ""))
    return tier, "detected", detected_vram_gb


def resolve(user: dict[str, Any], *, recipe: str | None = None, tier: int | str | None = None,
            detected_vram_gb: float | None = None, source: str = "job.toml") -> Resolved:
    """Apply recipe and tier under ``user`` (a parsed job file); raises JobError for schema errors.

    ``recipe``/``tier`` override the file's ``job.preset``/``job.vram_tier`` (the wizard passes them);
    ``detected_vram_gb`` stands in for NVML when ``vram_tier`` is "auto".
    """
    if not isinstance(user, dict):
        raise JobError([Finding("error", source, "a job file is a TOML table", "start from `wanlora presets motion`")])
    user = expand_shorthand(copy.deepcopy(user))
    findings: list[Finding] = []
    if recipe is not None and recipe != "custom":
        load_recipe(recipe)  # unknown name -> JobError
    rec_name = recipe if recipe is not None else _user_recipe(user)
    rec_name = None if rec_name == "custom" else rec_name
    tier_gb, tier_source, detected = _pick_tier(tier if tier is not None else _user_tier(user), user,
                                                detected_vram_gb, findings)

    rec_sections, rec_ds = _job_layer(load_recipe(rec_name), META_KEYS) if rec_name else ({}, {})
    tier_sections, tier_ds = _job_layer(load_tiers()[tier_gb], TIER_INFO_KEYS) if tier_gb else ({}, {})
    rec_sections, tier_sections = expand_shorthand(rec_sections), expand_shorthand(tier_sections)
    # An explicit recipe/tier argument (the wizard, `wanlora show --tier`) replaces the file's choice and is
    # recorded in the job, so the resolved job says what was applied.
    if recipe is not None:
        rec_sections = deep_merge(rec_sections, {"job": {"preset": recipe}})
        _pop_job_key(user, "preset")
    if tier is not None:
        tier_sections = deep_merge(tier_sections, {"job": {"vram_tier": tier}})
        _pop_job_key(user, "vram_tier")

    merged = deep_merge(deep_merge(rec_sections, tier_sections), {k: v for k, v in user.items() if k != "datasets"})
    if "datasets" in user:
        ds = user["datasets"]
        merged["datasets"] = [deep_merge(deep_merge(rec_ds, tier_ds), d) if isinstance(d, dict) else d
                              for d in ds] if isinstance(ds, list) else ds
    job = job_from_dict(merged, source)
    origins = _origins(job, user, rec_sections, rec_ds, tier_sections, tier_ds)
    return Resolved(job, origins, rec_name, tier_gb, tier_source, detected, findings)  # type: ignore[arg-type]


def _pop_job_key(user: dict[str, Any], key: str) -> None:
    if isinstance(user.get("job"), dict):
        user["job"].pop(key, None)


def resolve_file(path: Path | str, **kw: Any) -> Resolved:
    """Read a job file and resolve it (see :func:`resolve`); raises JobError naming the file."""
    return resolve(read_toml(Path(path)), source=str(path), **kw)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "ds": [{"x": 2}]}`` → ``{"a.b": 1, "ds[0].x": 2}``; scalar lists stay leaves."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) or (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
                out.update(flatten(v, key))
            else:
                out[key] = v
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}[{i}]"))
    return out


def _has(d: Any, dotted: str) -> bool:
    """Whether the nested dict ``d`` sets ``dotted`` (``datasets[0].num_frames``)."""
    cur = d
    for part in dotted.replace("]", "").replace("[", ".").split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return False
    return True


def _origins(job: Job, user: dict[str, Any], rec: dict[str, Any], rec_ds: dict[str, Any],
             tier: dict[str, Any], tier_ds: dict[str, Any]) -> dict[str, Origin]:
    out: dict[str, Origin] = {}
    for key in flatten(job.model_dump(mode="json")):
        if _has(user, key):
            out[key] = "user"
            continue
        if key.startswith("datasets["):
            leaf = key.split("].", 1)[1]
            out[key] = "tier" if leaf in tier_ds else "recipe" if leaf in rec_ds else "default"
        else:
            out[key] = "tier" if _has(tier, key) else "recipe" if _has(rec, key) else "default"
    return out
