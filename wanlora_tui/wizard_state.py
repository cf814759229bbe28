"""What the wizard knows between screens: recipe, tier, the user's own edits, and the resolved job.

The wizard never holds a second copy of the job's defaults: the user's edits are a sparse nested dict (only
what they typed), and every change re-runs ``presets.resolve`` + ``validate.validate_job`` — the same code
``wanlora validate`` runs — so values, origins (default/recipe/tier/user) and findings always agree with
what the daemon will accept.  Torch-free.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanlora.engine.config.findings import Finding, JobError
from wanlora.engine.config.io import dump_job
from wanlora.engine.config.machine import Machine, has_module, machine_findings, skip_requested
from wanlora.engine.config.schema import Job

_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")


def split_key(dotted: str) -> list[str | int]:
    """``datasets[0].num_frames`` → ``["datasets", 0, "num_frames"]``."""
    out: list[str | int] = []
    for part in dotted.split("."):
        m = _PART.fullmatch(part)
        if not m:
            raise KeyError(dotted)
        out.append(m.group(1))
        if m.group(2) is not None:
            out.append(int(m.group(2)))
    return out


def get_path(data: Any, dotted: str, default: Any = None) -> Any:
    """Value at a dotted key in nested dicts/lists/pydantic models, or ``default``."""
    cur = data
    for p in split_key(dotted):
        try:
            if isinstance(p, int):
                cur = cur[p]
            elif isinstance(cur, dict):
                cur = cur[p]
            else:
                cur = getattr(cur, p)
        except (KeyError, IndexError, AttributeError, TypeError):
            return default
    return cur


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted key in a nested dict, creating tables and list rows as needed."""
    parts = split_key(dotted)
    cur: Any = data
    for p, nxt in zip(parts, parts[1:], strict=False):
        empty: Any = [] if isinstance(nxt, int) else {}
        if isinstance(p, int):
            while len(cur) <= p:
                cur.append({})
            cur = cur[p]
        else:
            cur = cur.setdefault(p, empty)
    last = parts[-1]
    if isinstance(last, int):
        while len(cur) <= last:
            cur.append({})
        cur[last] = value
    else:
        cur[last] = value


def del_path(data: dict[str, Any], dotted: str) -> bool:
    """Remove a dotted key (a user override); True when something was removed."""
    parts = split_key(dotted)
    cur: Any = data
    for p in parts[:-1]:
        try:
            cur = cur[p]
        except (KeyError, IndexError, TypeError):
            return False
    try:
        del cur[parts[-1]]
    except (KeyError, IndexError, TypeError):
        return False
    return True


@dataclass
class WizardState:
    """Recipe + tier + the user's sparse edits → resolved job, origins and findings (recomputed on change)."""

    recipe: str = "custom"
    tier: int | str = "auto"
    gpus: list[Any] = field(default_factory=list)  # engine.config.gpu.GpuInfo rows, [] = no GPU found
    user: dict[str, Any] = field(default_factory=dict)
    check_files: bool = True
    job: Job | None = None
    origins: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    schema_error: bool = False  # True when the edits do not even make a Job (then ``job`` is the last good one)
    dirty: bool = True  # edits not yet evaluated
    # keys of a loaded file the schema does not know: dotted key → (value, "did you mean" key or "");
    # held apart so the rest of the section still shows, until the user renames or drops each one
    unknown: dict[str, tuple[Any, str]] = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_user_dict(cls, data: dict[str, Any], **kw: Any) -> WizardState:
        """Start from an existing job file's dict (``wanlora new --from``): its values count as the user's."""
        from wanlora.engine.config.schema import expand_shorthand

        data = expand_shorthand(copy.deepcopy(data))
        job = data.get("job", {}) if isinstance(data.get("job"), dict) else {}
        st = cls(recipe=str(job.get("preset", kw.pop("recipe", "custom"))), user=data, **kw)
        if "vram_tier" in job:
            st.tier = job["vram_tier"]
        st.set_aside_unknown()
        return st

    def set_aside_unknown(self) -> None:
        """Move keys the schema does not know out of the edits (a typo must not blank its whole section)."""
        from wanlora.engine.config.io import job_from_dict, suggest_key

        for _ in range(50):
            try:
                job_from_dict(copy.deepcopy(self.user))
                return
            except JobError as e:
                bad = [f.key for f in e.findings if f.message == "unknown key"]
            except Exception:
                return
            moved = False
            for key in bad:
                sentinel = object()
                value = get_path(self.user, key, sentinel)
                if value is not sentinel and del_path(self.user, key):
                    self.unknown[key] = (value, suggest_key(key))
                    moved = True
            if not moved:
                return

    def rename_unknown(self, key: str, to: str | None = None) -> str:
        """Give an unknown key's value to ``to`` (default: its "did you mean"); returns the new key."""
        value, suggestion = self.unknown.pop(key)
        target = to or suggestion
        if not target:
            raise KeyError(f"{key} has no suggestion; drop it or type its value into the right field")
        set_path(self.user, target, value)
        self.evaluate()
        return target

    def drop_unknown(self, key: str) -> None:
        self.unknown.pop(key, None)
        self.evaluate()

    def unknown_in(self, section: str) -> list[str]:
        """Unknown keys shown on a panel: its own, and (on the first panel) those of unknown sections."""
        from wanlora.engine.config.schema import PANELS

        panels = {name for name, _ in PANELS}
        out = []
        for k in self.unknown:
            top = k.split(".")[0].split("[")[0]
            if top == section or (section == "job" and top not in panels):
                out.append(k)
        return out

    # ---- edits --------------------------------------------------------------------------------------
    def value(self, dotted: str) -> Any:
        """What the field shows: the user's raw edit when it did not validate, else the resolved value."""
        sentinel = object()
        raw = get_path(self.user, dotted, sentinel)
        if raw is not sentinel and (self.job is None or self.field_error(dotted)):
            return raw
        if self.job is not None:
            v = get_path(self.job, dotted, sentinel)
            if v is not sentinel:
                return v
        return None if raw is sentinel else raw

    def origin(self, dotted: str) -> str:
        if get_path(self.user, dotted, _MISSING) is not _MISSING:
            return "user"
        return self.origins.get(dotted, "default")

    def set(self, dotted: str, value: Any, *, evaluate: bool = True) -> None:
        """Record the user's value; ``evaluate=False`` defers re-validation (debounced typing)."""
        set_path(self.user, dotted, value)
        self._sync_meta()
        self.dirty = True
        if evaluate:
            self.evaluate()

    def reset(self, dotted: str) -> None:
        """Drop the user's override so the recipe/tier/default value applies again."""
        if del_path(self.user, dotted):
            self.evaluate()

    def set_recipe(self, recipe: str) -> None:
        self.recipe = recipe
        self._sync_meta()
        self.evaluate()

    def set_tier(self, tier: int | str) -> None:
        self.tier = tier
        self._sync_meta()
        self.evaluate()

    def _sync_meta(self) -> None:
        """The job file records what the wizard started from (``[job] preset``, ``vram_tier``)."""
        job = self.user.setdefault("job", {})
        job["preset"] = self.recipe
        job["vram_tier"] = self.tier

    # ---- list sections (datasets, sample prompts) ---------------------------------------------------
    def rows(self, dotted_list: str) -> int:
        """Rows in a list section as the job will have them (the user's list is the source)."""
        lst = get_path(self.user, dotted_list)
        return len(lst) if isinstance(lst, list) else 0

    def add_row(self, dotted_list: str, row: dict[str, Any] | None = None) -> int:
        lst = get_path(self.user, dotted_list)
        if not isinstance(lst, list):
            lst = []
            set_path(self.user, dotted_list, lst)
        lst.append(dict(row or {}))
        self.evaluate()
        return len(lst) - 1

    def remove_row(self, dotted_list: str, index: int) -> None:
        lst = get_path(self.user, dotted_list)
        if isinstance(lst, list) and 0 <= index < len(lst):
            del lst[index]
            self.evaluate()

    # ---- evaluation: the same code as `wanlora validate` -------------------------------------------
    @property
    def detected_vram_gb(self) -> float | None:
        if not self.gpus:
            return None
        return max(float(g.free_gb) for g in self.gpus)

    @property
    def vram_gb(self) -> float | None:
        """Memory the job will have: the detected GPU's total, else the chosen tier's size."""
        if self.gpus:
            return max(float(g.total_gb) for g in self.gpus)
        return float(self.tier) if isinstance(self.tier, int) else None

    def evaluate(self) -> None:
        from wanlora.engine.checks.validate import sort_findings, validate_job
        from wanlora.engine.config.presets import resolve

        self._sync_meta()
        self.dirty = False
        try:
            res = resolve(
                copy.deepcopy(self.user),
                recipe=None if self.recipe == "custom" else self.recipe,
                tier=None if self.tier == "auto" else self.tier,
                detected_vram_gb=self.detected_vram_gb,
            )
        except JobError as e:
            self.schema_error = True
            self.findings = list(e.findings)
            return
        self.schema_error = False
        self.job, self.origins = res.job, dict(res.origins)
        extra = []
        if not skip_requested():  # the wizard submits to this machine's daemon: can this machine run it?
            extra = machine_findings(res.job, self.machine)
        self.findings = sort_findings(list(res.findings) + validate_job(
            res.job, check_files=self.check_files, vram_gb=self.detected_vram_gb) + extra)

    @property
    def machine(self) -> Machine:
        """This machine as the wizard sees it (the GPU step's list, so tests can pass a GPU)."""
        return Machine(cuda=bool(self.gpus), bitsandbytes=has_module("bitsandbytes"),
                       gpu_names=tuple(str(getattr(g, "name", "")) for g in self.gpus))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def can_submit(self) -> bool:
        return self.job is not None and not self.schema_error and not self.errors

    def field_findings(self, dotted: str) -> list[Finding]:
        return [f for f in self.findings if f.key == dotted]

    def field_error(self, dotted: str) -> Finding | None:
        for f in self.findings:
            if f.key == dotted and f.level == "error":
                return f
        return None

    def section_findings(self, prefix: str) -> list[Finding]:
        """Findings whose key is in a panel (``training`` covers ``training.dop.enabled``)."""
        return [f for f in self.findings if f.key == prefix or f.key.startswith((prefix + ".", prefix + "["))]

    def toml(self) -> str:
        """The job file the wizard will submit: fully resolved (what you review is what runs)."""
        if self.job is None:
            return ""
        return dump_job(self.job)

    def final_check(self) -> list[Finding]:
        """Re-check the exact TOML text through ``check_file``, the path ``wanlora validate`` takes."""
        from wanlora.engine.checks.validate import check_file

        text = self.toml()
        if not text or self.schema_error:
            return self.errors or [Finding("error", "job", "the job is not complete", "fix the fields marked ✗")]
        fd, tmp = tempfile.mkstemp(prefix="wanlora-wizard-", suffix=".toml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            _res, findings = check_file(Path(tmp), vram_gb=self.detected_vram_gb,
                                        machine=False if skip_requested() else self.machine)
        finally:
            os.unlink(tmp)
        return list(findings)


_MISSING = object()


# ---- the guide's advice, from the recipe/tier TOML data ------------------------------------------------
# recipe [meta] key → the job keys it advises on (list rows written without an index: datasets[].x).
# a recipe's [meta] tip → the fields it is about (each tip under the fields it speaks of, and only those;
# extra_advice, which covers DOP and differential guidance at once, is for `wanlora presets` only)
ADVICE_KEYS: dict[str, tuple[str, ...]] = {
    "trigger_advice": ("job.trigger_word",),
    "rank_advice": ("target.rank",),
    "timestep_advice": ("training.timestep_type", "training.timestep_bias"),
    "flip_advice": ("datasets[].flip_x", "datasets[].flip_y"),
    "data_advice": ("datasets[].resolutions", "datasets[].num_frames"),
    "dropout_advice": ("datasets[].caption_dropout",),
    "clip_advice": ("datasets[].folder",),
    "caption_advice": ("datasets[].default_caption", "sample.prompts[].prompt"),
    "guidance_advice": ("advanced.differential_guidance",),
    "dop_advice": ("training.dop.enabled",),
}
# sections whose values a VRAM tier sets: their panels open with the tier's advice line.
TIER_SECTIONS = ("model", "quantization", "multistage", "training", "datasets")


@functools.lru_cache(maxsize=16)
def recipe_meta(name: str) -> dict[str, Any]:
    """The ``[meta]`` table of a recipe (title, description, advice lines); {} for custom."""
    if name == "custom":
        return {"title": "Custom", "description": "Start from the schema's defaults and set every knob yourself."}
    from wanlora.engine.config.presets import load_recipe

    data = load_recipe(name)
    meta = data.get("meta") if isinstance(data, dict) else getattr(data, "meta", None)
    return dict(meta or {})


@functools.lru_cache(maxsize=16)
def tier_meta(tier: int | str) -> dict[str, Any]:
    """The tier's table (title, advice, step_time_factor); {} for auto/unknown."""
    if not isinstance(tier, int):
        return {}
    from wanlora.engine.config.presets import load_tiers

    tiers = load_tiers()
    t = tiers.get(tier) or tiers.get(str(tier)) or {}
    return dict(t) if isinstance(t, dict) else dict(getattr(t, "__dict__", {}))


def advice_for(recipe: str, dotted: str) -> str:
    """The guide's advice for one knob under this recipe (list indices ignored), or ''."""
    bare = re.sub(r"\[\d+\]", "[]", dotted)
    meta = recipe_meta(recipe)
    lines: list[str] = []
    for mkey, keys in ADVICE_KEYS.items():
        if bare in keys and meta.get(mkey):
            lines.append(str(meta[mkey]))
    if bare == "training.steps" and meta.get("steps_range"):
        lo, hi = meta["steps_range"]
        lines.append(f"{meta.get('title', recipe)}: {lo}-{hi} steps.")
    if bare == "datasets[].num_frames" and meta.get("frames_range") and not meta.get("data_advice"):
        lo, hi = meta["frames_range"]
        lines.append(f"{lo}-{hi} frames.")
    return " ".join(lines)
