"""Wan 2.2 A14B's two experts: their names and which of them a job trains, defined once (torch-free).

``transformer`` (high noise) lays out motion and composition, ``transformer_2`` (low noise) the detail.
The job schema, the trainer, the estimate and the reports all take the names and the "which train" rule
from here, high noise first.
"""

from __future__ import annotations

HIGH, LOW = "high_noise", "low_noise"
EXPERTS: tuple[str, str] = (HIGH, LOW)


def trained_experts(high_noise: bool, low_noise: bool, *, required: bool = True) -> list[str]:
    """The experts to train, high first.  ``required``: none on is an error (the trainer needs one); the
    schema's own view (``MultistageSection.trained``) passes False so validation can name the key instead."""
    out = [e for e, on in zip(EXPERTS, (high_noise, low_noise), strict=True) if on]
    if not out and required:
        raise ValueError("multistage: neither high_noise nor low_noise is trained; turn at least one on")
    return out
