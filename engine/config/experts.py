"""Wan 2.2 A14B's two experts: their names and which of them a job trains, defined once (torch-free).

``transformer`` (high noise) lays out motion and composition, ``transformer_2`` (low noise) the detail.
The job schema, the trainer, the estimate and the reports all take the names and the "which train" rule
from here, high noise first, and the settings an expert may set for itself (:data:`EXPERT_SETTINGS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

HIGH, LOW = "high_noise", "low_noise"
EXPERTS: tuple[str, str] = (HIGH, LOW)
ExpertName = Literal["high_noise", "low_noise"]  # the type of a name; spelled out once more for type checkers
assert get_args(ExpertName) == EXPERTS


def trained_experts(high_noise: bool, low_noise: bool, *, required: bool = True) -> list[str]:
    """The experts to train, high first.  ``required``: none on is an error (the trainer needs one); the
    schema's own view (``MultistageSection.trained``) passes False so validation can name the key instead."""
    out = [e for e, on in zip(EXPERTS, (high_noise, low_noise), strict=True) if on]
    if not out and required:
        raise ValueError("multistage: neither high_noise nor low_noise is trained; turn at least one on")
    return out


@dataclass(frozen=True)
class ExpertSetting:
    """One setting an expert may set for itself in ``[multistage.<expert>]``; empty takes the job-wide key.

    The rows of :data:`EXPERT_SETTINGS` drive everything per-expert: the schema's ``ExpertSettings`` fields
    (type and bounds are the job-wide field's, plus None for "empty"), ``ExpertPlan`` and its resolution,
    the ``ready`` event's ``expert_settings``, the LoRA files' ``training`` metadata and ``wanlora show``.
    """

    key: str  # the key in [multistage.high_noise] / [multistage.low_noise] and the ExpertPlan attribute
    falls_back_to: str  # the job-wide dotted key used when the expert leaves it empty
    help: str  # the schema field's one-line help (docs/job-file.md)
    then: str | None = None  # when the job-wide key is empty too: this earlier row's resolved value
    # rank and alpha are header fields of a LoRA file of their own (loaders read them), so the `training`
    # metadata JSON does not repeat them; every other setting is written there
    in_training_metadata: bool = True


EXPERT_SETTINGS: tuple[ExpertSetting, ...] = (
    ExpertSetting("learning_rate", "training.learning_rate",
                  "This expert's learning rate; empty = training.learning_rate (e.g. lower it for the high-noise "
                  "expert if it overtrains)."),
    ExpertSetting("rank", "target.rank", "This expert's LoRA rank; empty = target.rank.",
                  in_training_metadata=False),
    ExpertSetting("alpha", "target.alpha",
                  "This expert's LoRA alpha; empty = target.alpha (or this expert's rank when that is empty too).",
                  then="rank", in_training_metadata=False),
    ExpertSetting("timestep_type", "training.timestep_type",
                  "This expert's timestep type; empty = training.timestep_type."),
    ExpertSetting("timestep_bias", "training.timestep_bias",
                  "This expert's timestep bias inside its own range; empty = training.timestep_bias."),
    ExpertSetting("weight_decay", "training.weight_decay",
                  "This expert's AdamW weight decay; empty = training.weight_decay."),
)
EXPERT_SETTING_KEYS: tuple[str, ...] = tuple(s.key for s in EXPERT_SETTINGS)


def _check_rows() -> None:
    """A row's ``then`` names an earlier row (resolution goes in table order); keys are unique."""
    seen: set[str] = set()
    for s in EXPERT_SETTINGS:
        if s.key in seen or s.key == "train":
            raise ValueError(f"EXPERT_SETTINGS: {s.key!r} is listed twice or clashes with 'train'")
        if s.then is not None and s.then not in seen:
            raise ValueError(f"EXPERT_SETTINGS: {s.key!r} falls back to {s.then!r}, which must be an earlier row")
        seen.add(s.key)


_check_rows()
