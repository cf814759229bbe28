"""A suggested checkpoint per expert from recorded eval losses (pure; the user decides).

For each expert, among the checkpoint files that have an eval loss: the pick is the file with the lowest
mean eval loss (ties → the earlier step).  The experts are picked independently — the high-noise file may
come from one step and the low-noise file from another.

Confidence says how much the timestep bands agree with the mean:

- ``agreement`` = share of bands whose own lowest-loss file is the pick;
- ``margin`` = (second-lowest mean − lowest mean) / lowest mean (relative; None with one candidate);
- ``high`` when agreement ≥ 0.75 and margin ≥ 2 %; ``medium`` when agreement ≥ 0.5 (or one of the two
  high conditions holds); ``low`` otherwise; ``only one`` with a single candidate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

HIGH_AGREEMENT, MEDIUM_AGREEMENT, HIGH_MARGIN = 0.75, 0.5, 0.02


@dataclass(frozen=True)
class Candidate:
    step: int
    file: str
    loss: float
    bands: tuple[float, ...]  # per-band losses, same band order for every candidate


@dataclass(frozen=True)
class Pick:
    expert: str
    step: int
    file: str
    loss: float
    confidence: str
    agreement: float
    margin: float | None
    candidates: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _best(cands: list[Candidate], key) -> Candidate:
    return min(cands, key=lambda c: (key(c), c.step))


def suggest_one(expert: str, cands: list[Candidate]) -> Pick | None:
    """The pick for one expert (None without candidates)."""
    if not cands:
        return None
    best = _best(cands, lambda c: c.loss)
    if len(cands) == 1:
        return Pick(expert, best.step, best.file, best.loss, "only one", 1.0, None, 1)
    n_bands = min(len(c.bands) for c in cands)
    wins = sum(_best(cands, lambda c, k=k: c.bands[k]) is best for k in range(n_bands))
    agreement = wins / n_bands if n_bands else 0.0
    second = min(c.loss for c in cands if c is not best)
    margin = (second - best.loss) / best.loss if best.loss > 0 else 0.0
    if agreement >= HIGH_AGREEMENT and margin >= HIGH_MARGIN:
        conf = "high"
    elif agreement >= MEDIUM_AGREEMENT or margin >= HIGH_MARGIN:
        conf = "medium"
    else:
        conf = "low"
    return Pick(expert, best.step, best.file, best.loss, conf, round(agreement, 3), round(margin, 5), len(cands))


def suggest(evals: dict[str, list[Candidate]]) -> dict[str, Pick]:
    """``{expert: Pick}`` for every expert with at least one candidate."""
    out = {}
    for expert, cands in evals.items():
        p = suggest_one(expert, cands)
        if p is not None:
            out[expert] = p
    return out


def candidate(step: int, file: str, result: dict[str, Any]) -> Candidate:
    """A candidate from one expert's eval result ``{loss, bands: [{loss, ...}]}``."""
    return Candidate(step, file, float(result["loss"]), tuple(float(b["loss"]) for b in result.get("bands", [])))
