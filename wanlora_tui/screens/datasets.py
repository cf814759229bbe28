"""The DATASETS panel: the generic panel over ``[[datasets]]`` rows, opening with one empty row.

A job without a dataset cannot run, so the screen starts with a row whose folder is the first thing to
type; the recipe's clip and caption advice heads the panel (what to put in the folder).
"""

from __future__ import annotations

from textual.app import ComposeResult
from wanlora.tui.screens.panel import PanelScreen
from wanlora.tui.wizard_state import recipe_meta


class DatasetsScreen(PanelScreen):
    def __init__(self, title: str = "DATASETS") -> None:
        super().__init__("datasets", title)

    def intro_text(self) -> str:
        """The recipe's clip count and length (the folder's own advice is on the folder field)."""
        meta = recipe_meta(self.state.recipe)
        if meta.get("clips_min"):
            lo, hi = meta.get("clip_seconds", ["?", "?"])
            return (f"{meta.get('title')}: {meta['clips_min']}-{meta.get('clips_max')} clips of {lo}-{hi} s. "
                    "Several folders = several datasets (+ Add dataset).")
        return "Several folders = several datasets (+ Add dataset)."

    def compose_body(self) -> ComposeResult:
        if self.state.rows("datasets") == 0:
            self.state.add_row("datasets")
        yield from super().compose_body()
