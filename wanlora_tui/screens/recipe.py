"""Step 1: what kind of LoRA.  The choice decides most knobs (the recipe's values and advice)."""

from __future__ import annotations

from rich.markup import escape as _esc
from textual import on
from textual.app import ComposeResult
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option
from wanlora.engine.config.schema import RECIPES
from wanlora.tui.screens.wizard_base import WizardScreen
from wanlora.tui.wizard_state import recipe_meta


def recipe_details(name: str) -> str:
    """The recipe's description and data/caption/trigger advice, as shown beside the list."""
    meta = recipe_meta(name)
    # advice is data, not markup: "[trigger]" must reach the screen as written (issue #14)
    lines = [f"[b]{_esc(str(meta.get('title', name)))}[/b]", _esc(str(meta.get("description", "")))]
    for key, head in (("clip_advice", "Clips"), ("caption_advice", "Captions"), ("trigger_advice", "Trigger")):
        if meta.get(key):
            lines.append(f"[b]{head}:[/b] {_esc(str(meta[key]))}")
    if meta.get("steps_range"):
        lo, hi = meta["steps_range"]
        lines.append(f"[b]Steps:[/b] {lo}-{hi}")
    return "\n".join(lines)


class RecipeScreen(WizardScreen):
    """A list of the recipes; the highlighted one's advice below it.  Enter or ctrl+n picks it."""

    STEP = "recipe"

    def compose_body(self) -> ComposeResult:
        options = [Option(f"{recipe_meta(r).get('title', r)}  ({r})", id=r) for r in RECIPES]
        yield OptionList(*options, id="recipes")
        yield Static("", id="recipe-details")

    def on_mount(self) -> None:
        ol = self.query_one("#recipes", OptionList)
        ol.highlighted = list(RECIPES).index(self.state.recipe) if self.state.recipe in RECIPES else 0
        ol.focus()
        self._show(RECIPES[ol.highlighted or 0])
        self.refresh_status()

    def _show(self, name: str) -> None:
        self.query_one("#recipe-details", Static).update(recipe_details(name))

    @on(OptionList.OptionHighlighted, "#recipes")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show(str(event.option.id))

    @on(OptionList.OptionSelected, "#recipes")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.action_next()

    def can_leave(self) -> bool:
        ol = self.query_one("#recipes", OptionList)
        name = RECIPES[ol.highlighted or 0]
        if name != self.state.recipe:
            self.state.set_recipe(name)
        return True

    def refresh_status(self) -> None:
        self.query_one("#wiz-status", Static).update("↑/↓ choose · enter to continue")
