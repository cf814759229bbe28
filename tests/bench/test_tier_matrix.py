"""bench/tier_matrix.py spreads the matrix over the machine's GPUs and runs fit cells side by side on a card.
What keeps that honest: a timed cell has its GPU to itself, and no two cells whose caps (plus a CUDA context
each) exceed their card ever share it, so each process's planner sees the memory it would alone.  The
processes here are stand-ins (a short sleep); the scheduling is the bench's own."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from bench import tier_matrix as tm

FITS = ["12:motion:sq:fit", "24:motion:wide:fit", "48:motion:sq:fit", "48:character:sq:fit", "80:motion:wide:fit",
        "12:character:sq:fit", "24:character:sq:fit"]
TIMED = ["24:motion:sq:time", "eager", "80:motion:sq:guide"]


def _stand_in(monkeypatch: pytest.MonkeyPatch, seconds: float = 0.3) -> None:
    monkeypatch.setattr(tm, "cell_cmd", lambda cell, out, folders: ["sleep", str(seconds)])


def _gib(cell: str) -> float:
    return 0.0 if cell == "eager" else float(cell.split(":")[0])


@pytest.mark.parametrize("cards", [[79.6], [140.4], [79.6, 79.6]])
def test_cells_never_share_a_card_beyond_its_size_and_timed_cells_run_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cards: list[float]) -> None:
    _stand_in(monkeypatch)
    gpus = [tm.Gpu(i, gib) for i, gib in enumerate(cards)]
    rows = tm.run_cells(TIMED, FITS, tmp_path, {}, gpus, start_by=1e12, stop_at=1e12, lanes=4)
    assert sorted(rows) == sorted(TIMED + FITS) and all(r["rc"] == 0 for r in rows.values())
    for c in TIMED:
        assert not rows[c].get("shared_gpu_with"), c  # its s/step is clean
    shared = [r for r in rows.values() if r.get("shared_gpu_with")]
    assert shared  # the small cells did share a card (the point of the lanes)
    for r in shared:
        for other in r["shared_gpu_with"]:
            assert rows[other]["gpu"] == r["gpu"]
            card = cards[r["gpu"]]
            assert sum(min(_gib(c), card) + tm.CONTEXT_GIB for c in (r["cell"], other)) <= card, (r["cell"], other)
    big = [c for c in FITS if _gib(c) + tm.CONTEXT_GIB > max(cards) / 2]
    for a, b in itertools.combinations(big, 2):
        assert b not in rows[a].get("shared_gpu_with", [])
    assert len((tmp_path / "cells.jsonl").read_text().splitlines()) == len(TIMED + FITS)
    if len(cards) > 1:
        assert {r["gpu"] for r in rows.values()} == {0, 1}  # every card took cells


def test_fit_cells_wait_until_every_timed_cell_has_its_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(monkeypatch)
    tm.run_cells(TIMED, FITS[:2], tmp_path, {}, [tm.Gpu(0, 140.4)], start_by=1e12, stop_at=1e12, lanes=4)
    order = [json.loads(line)["cell"] for line in (tmp_path / "cells.jsonl").read_text().splitlines()]
    assert order[:3] == TIMED  # one card: the timed cells one after another, in the order given, then the fits


def test_a_cell_that_cannot_start_before_the_deadline_is_reported_not_run(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(monkeypatch, 0)
    rows = tm.run_cells(TIMED[:1], FITS[:2], tmp_path, {}, [tm.Gpu(0, 79.6)], start_by=0.0, stop_at=1e12, lanes=4)
    assert rows == {}


def test_cells_side_by_side_stay_within_the_machines_ram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two 12 GB cells (layer offloading: the tier asks for 64 GB of RAM each) never run together on a
    128 GB machine, though the card has room for both."""
    _stand_in(monkeypatch)
    cells = ["12:motion:sq:fit", "12:character:sq:fit", "12:motion:wide:fit"]
    rows = tm.run_cells([], cells, tmp_path, {}, [tm.Gpu(0, 140.4)], start_by=1e12, stop_at=1e12, lanes=4,
                        ram_gib=125.0)
    assert sorted(rows) == sorted(cells) and not any(r.get("shared_gpu_with") for r in rows.values())
    rows = tm.run_cells([], cells, tmp_path, {}, [tm.Gpu(0, 140.4)], start_by=1e12, stop_at=1e12, lanes=4,
                        ram_gib=500.0)
    assert all(len(r["shared_gpu_with"]) == 2 for r in rows.values())  # with the RAM, all three at once
