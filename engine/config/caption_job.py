"""The caption job: ``wanlora caption --queue FOLDER`` as a daemon job (torch-free; the daemon imports it).

A caption job file is one ``[caption]`` table (no ``[job]``/``[model]``: it is not a training job)::

    [caption]
    folder = "/data/clips"
    recipe = "character"        # motion | style | character
    trigger = "frung"
    class_word = "young woman"
    overwrite = false
    model = "Qwen/Qwen2.5-VL-7B-Instruct"
    quant = "auto"              # auto | none | 4bit

The daemon's intake checks it (``engine.checks.caption_job.check_text``, which lists the folder), freezes
it in ``jobs/<id>/job.toml`` with a ``[job]`` table holding its name, and starts
``python -m wanlora.engine.caption JOB_DIR`` for it (:func:`command`) in its own session like a trainer.  The
child follows the job-folder contract (``status.json``, ``events.jsonl`` with one ``step`` per clip,
``run.lock``, ``control/pause``, exit codes), so ``wanlora status``, ``attach``, ``cancel``,
``pause``/``resume`` and re-adoption after a daemon restart work on it unchanged; a retried caption job
captions only the clips still missing a caption.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, ValidationError, field_validator, model_validator
from wanlora.engine.config import jobdir
from wanlora.engine.config.findings import Finding, JobError
from wanlora.engine.config.io import findings_from_validation_error, parse_toml
from wanlora.engine.config.schema import Section

TABLE = "caption"
CAPTION_MODULE = "wanlora.engine.caption"
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
RECIPES = ("motion", "style", "character")


class CaptionSpec(Section):
    """What to caption and how (the same options as ``wanlora caption``)."""

    folder: str = Field(description="Folder of clips/images to caption (captions are written next to them).")
    recipe: Literal["motion", "style", "character"] = Field(
        "motion", description="Caption style of the guide's recipe: motion names the camera move and action, "
                              "style describes the look, character starts with the trigger and a class.")
    trigger: str = Field("", description="Trigger word a character caption starts with ([trigger] when empty).")
    class_word: str = Field("", description="What the character is (\"young woman\"); required for character.")
    overwrite: bool = Field(False, description="Replace existing caption files (never done otherwise).")
    model: str = Field(DEFAULT_MODEL, description="Qwen2.5-VL / Qwen3-VL hub id or local folder.")
    quant: Literal["auto", "none", "4bit"] = Field("auto", description="4-bit (bitsandbytes) on small cards.")
    caption_ext: str = Field("txt", description="Extension of the caption files.")

    @field_validator("caption_ext")
    @classmethod
    def _ext(cls, v: str) -> str:
        v = v.lstrip(".")
        if not re.fullmatch(r"[A-Za-z0-9_]{1,16}", v):
            raise ValueError("a caption extension is letters/digits, like txt")
        return v

    @model_validator(mode="after")
    def _character_class(self) -> CaptionSpec:
        if self.recipe == "character" and not self.class_word.strip():
            raise ValueError("recipe = \"character\" needs class_word (what the character is: \"young woman\")")
        return self


def job_name(folder: str | Path) -> str:
    """``caption-<folder name>``, in the characters a job name may hold."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(folder)).expanduser().name or "clips")[:48] or "clips"
    return f"caption-{base}"


def spec_from_dict(data: dict[str, Any], source: str = "caption job") -> CaptionSpec:
    """The ``[caption]`` table as a :class:`CaptionSpec`, or :class:`JobError` naming the bad keys."""
    extra = sorted(k for k in data if k not in (TABLE, "job"))
    if extra:
        raise JobError([Finding("error", extra[0], "unknown table in a caption job file",
                                "a caption job file holds one [caption] table")], source)
    table = data.get(TABLE)
    if not isinstance(table, dict):
        raise JobError([Finding("error", TABLE, "missing [caption] table")], source)
    try:
        return CaptionSpec.model_validate(table)
    except ValidationError as e:
        findings = [Finding(f.level, f"{TABLE}.{f.key}" if f.key != "job" else TABLE, f.message, f.fix)
                    for f in findings_from_validation_error(e)]
        raise JobError(findings, source) from None


def is_caption_data(data: dict[str, Any]) -> bool:
    """A parsed TOML that is a caption job (a ``[caption]`` table and no training sections)."""
    return isinstance(data.get(TABLE), dict) and set(data) <= {TABLE, "job"}


def is_caption_text(text: str) -> bool:
    """Whether a job file's text is a caption job (False for anything that does not parse)."""
    try:
        return is_caption_data(parse_toml(text))
    except JobError:
        return False


def is_caption_job_dir(job_dir: str | Path) -> bool:
    """Whether ``JOB_DIR/job.toml`` is a caption job."""
    try:
        return is_caption_data(parse_toml((Path(job_dir) / jobdir.JOB_TOML).read_bytes()))
    except (OSError, JobError):
        return False


def load_spec(job_dir: str | Path) -> CaptionSpec:
    """The frozen caption job of a job folder (JobError / OSError when unreadable)."""
    path = Path(job_dir) / jobdir.JOB_TOML
    return spec_from_dict(parse_toml(path.read_bytes(), str(path)), str(path))


def to_text(spec: CaptionSpec) -> str:
    """The job file ``wanlora caption --queue`` spools (absolute folder)."""
    data = spec.model_dump()
    data["folder"] = str(Path(spec.folder).expanduser().resolve())
    return tomli_w.dumps({TABLE: data})


def command(job_dir: str | Path, python: str) -> list[str]:
    """argv of the caption child for a job folder (one process, the GPU the daemon reserved)."""
    return [python, "-m", CAPTION_MODULE, str(job_dir)]
