"""Shared frame of every wizard step: a title line, the step's body, Back/Next, and the keys for them.

Back and Next are messages (:class:`WizardScreen.Advance` / :class:`WizardScreen.Retreat`) that bubble up to
the app, which owns the order of the steps; a screen reads what it shows through :class:`WizardHost`, a
protocol the app satisfies.  So screens never import the app (no import cycle, and a screen can be tested
with any host).  Keys work everywhere, including inside inputs: ctrl+n / ctrl+b, and escape for Back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from rich.markup import escape as _esc
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

if TYPE_CHECKING:
    from wanlora.tui.wizard_state import WizardState


class WizardHost(Protocol):
    """What a wizard step needs from the program around it (the app provides it)."""

    wizard: WizardState
    gpu_cache: list[Any] | None

    def wizard_title(self, step: str) -> str: ...

    def detect_gpus(self) -> list[Any]: ...


class WizardScreen(Screen[None]):
    """Base for wizard steps; subclasses implement ``compose_body`` and may veto ``can_leave``."""

    STEP = ""  # the app's step name (recipe, gpu, job, ..., scan, review)
    NEXT_LABEL = "Next ▶"

    BINDINGS = [
        Binding("ctrl+n", "next", "Next", priority=True),
        Binding("ctrl+b", "back", "Back", priority=True),
        Binding("escape", "back", "Back", show=False),
        Binding("ctrl+q", "quit_wizard", "Quit", priority=True),
    ]

    class Advance(Message):
        """The user finished this step (Next / Submit)."""

        def __init__(self, step: str) -> None:
            super().__init__()
            self.step = step

    class Retreat(Message):
        """The user wants the previous step (Back)."""

        def __init__(self, step: str) -> None:
            super().__init__()
            self.step = step

    class QuitRequested(Message):
        """ctrl+q in the wizard: the app confirms first (and keeps a draft)."""

    @property
    def host(self) -> WizardHost:
        return self.app  # type: ignore[return-value]

    @property
    def state(self) -> WizardState:
        return self.host.wizard

    def title_text(self) -> str:
        return self.host.wizard_title(self.STEP)

    def compose(self) -> ComposeResult:
        yield Static(self.title_text(), id="wiz-title", markup=False)
        yield from self.compose_body()
        yield Static("", id="wiz-status")
        with Horizontal(id="wiz-nav"):
            yield Button("◀ Back", id="back", compact=True)
            yield Static("", id="nav-spacer")
            yield Button(self.NEXT_LABEL, id="next", variant="primary", compact=True)
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_screen_resume(self) -> None:
        self.query_one("#wiz-title", Static).update(self.title_text())
        self.refresh_status()

    def refresh_status(self) -> None:
        """Bottom line: how many errors the job has right now (so nobody is surprised at review)."""
        st = self.state
        errs = st.errors
        line = self.query_one("#wiz-status", Static)
        if errs:
            from wanlora.tui.term import ellipsize

            first = errs[0]
            more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
            # one line (padding 1 each side, "✗ ", ": "): the message is shortened with "…", never cut mid-word
            room = max(10, (self.size.width or 80) - 6 - len(first.key) - len(more))
            line.update(f"[b red]✗ {_esc(first.key)}[/]: {_esc(ellipsize(first.message, room))}{more}")
        else:
            warns = [f for f in st.findings if f.level == "warning"]
            line.update(f"[green]✓ no errors[/]{f' · {len(warns)} warning(s)' if warns else ''}")

    def can_leave(self) -> bool:
        return True

    @on(Button.Pressed, "#next")
    def action_next(self) -> None:
        if self.can_leave():
            self.post_message(self.Advance(self.STEP))

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.post_message(self.Retreat(self.STEP))

    def action_quit_wizard(self) -> None:
        self.post_message(self.QuitRequested())
