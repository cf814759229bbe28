"""bench/tier_matrix.py runs the fit cells side by side on one GPU.  What makes that honest is that no two cells
whose caps (plus a CUDA context each) exceed the card ever run at once: then each process's planner sees the
memory it would alone.  The processes here are stand-ins (a short sleep); the scheduling is the bench's own."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from bench import tier_matrix as tm

CELLS = ["12:motion:sq:fit", "24:motion:wide:fit", "48:motion:sq:fit", "48:character:sq:fit", "80:motion:wide:fit",
         "12:character:sq:fit", "24:character:sq:fit"]


@pytest.mark.parametrize("card", [79.6, 140.4])
def test_side_by_side_cells_never_hold_more_than_the_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          card: float) -> None:
    monkeypatch.setattr(tm, "cell_cmd", lambda cell, job: [sys.executable, "-c", "import time; time.sleep(0.3)"])
    folders = {f"{a}_{r}": tmp_path / "clips" / f"{a}_{r}" for a in ("sq", "wide") for r in tm.RECIPES}
    rows = tm.run_fit_cells(CELLS, tmp_path, folders, card, start_by=1e12, stop_at=1e12, lanes=4)
    assert sorted(rows) == sorted(CELLS) and all(r["rc"] == 0 for r in rows.values())
    shared = [r for r in rows.values() if r.get("shared_gpu_with")]
    assert shared  # the small cells did share the card (the point of the lanes)
    for r in shared:
        for other in r["shared_gpu_with"]:
            room = sum(min(float(c.split(":")[0]), card) + tm.CONTEXT_GIB for c in (r["cell"], other))
            assert room <= card, (r["cell"], other)
    # a cell as large as the card runs alone
    big = [c for c in CELLS if float(c.split(":")[0]) + tm.CONTEXT_GIB > card / 2]
    for a, b in itertools.combinations(big, 2):
        assert b not in rows[a].get("shared_gpu_with", [])
    assert (tmp_path / "cells.jsonl").read_text().count("\n") == len(CELLS)


def test_a_cell_that_does_not_start_before_the_deadline_is_reported_not_run(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tm, "cell_cmd", lambda cell, job: [sys.executable, "-c", "pass"])
    rows = tm.run_fit_cells(CELLS[:2], tmp_path, {}, 79.6, start_by=0.0, stop_at=1e12, lanes=4)
    assert rows == {}
