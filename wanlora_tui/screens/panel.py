"""The one generic panel screen: renders any section of the job schema as a form.

Walks the pydantic model of the section: a plain field becomes a :class:`SchemaField`, a nested model
(``training.dop``) a titled group, a list of models (``datasets``, ``sample.prompts``) rows with Add/Remove.
Values, origins and findings come from the wizard state, which re-resolves and re-validates on every edit.
Text edits are debounced (a dataset folder is scanned by validation) and flushed before leaving the screen.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from rich.markup import escape as _esc
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Input, Static
from wanlora.engine.config.schema import Job
from wanlora.tui.screens.wizard_base import WizardScreen
from wanlora.tui.widgets.field import SchemaField, format_value
from wanlora.tui.wizard_state import TIER_SECTIONS, advice_for, get_path, tier_meta

# Knobs chosen on an earlier step; shown for completeness, changed there.
LOCKED = {"job.preset": "chosen on the recipe step", "job.vram_tier": "chosen on the GPU step"}
ROW_NAMES = {"datasets": "Dataset", "sample.prompts": "Prompt"}
DEBOUNCE_S = 0.25


def _model_of(ann: Any) -> type[BaseModel] | None:
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _list_item_model(ann: Any) -> type[BaseModel] | None:
    if typing.get_origin(ann) is list:
        args = typing.get_args(ann)
        return _model_of(args[0]) if args else None
    return None


def _safe(key: str) -> str:
    return key.replace(".", "-").replace("[", "-").replace("]", "")


class PanelScreen(WizardScreen):
    """One wizard step per schema section (``STEP`` = the TOML table's name)."""

    def __init__(self, section: str, title: str) -> None:
        super().__init__(name=section)
        self.STEP = section
        self.section = section
        self.section_title = title
        self._pending: Timer | None = None
        self._unknown_keys: list[str] = []

    # ---- building the form from the schema ----------------------------------------------------------
    def compose_body(self) -> ComposeResult:
        yield Static(self.intro_text(), id="panel-intro", markup=False)
        with VerticalScroll(id="fields"):
            yield from self.build_fields()

    def intro_text(self) -> str:
        if self.section in TIER_SECTIONS and isinstance(self.state.tier, int):
            adv = tier_meta(self.state.tier).get("advice", "")
            if adv:
                return f"Tier {self.state.tier}: {adv}"
        return ""

    def on_mount(self) -> None:
        self.query_one("#panel-intro", Static).display = bool(self.intro_text())
        self.refresh_fields()
        self.focus_first()

    def focus_first(self, errors_first: bool = False) -> None:
        if errors_first:
            for f in self.query(SchemaField):
                if self.state.field_error(f.key) is not None:
                    ctl = f.query_one("#ctl")
                    if ctl.focusable:
                        ctl.focus()
                        f.scroll_visible(animate=False, top=True)
                        return
        self.query_one("#fields", VerticalScroll).scroll_home(animate=False)
        for w in self.query("#fields Input, #fields Select, #fields Checkbox, #fields Button"):
            if w.focusable:
                w.focus()
                return
        self.query_one("#next", Button).focus()

    def build_fields(self) -> Iterator[Widget]:
        yield from self._unknown_rows()
        ann = Job.model_fields[self.section].annotation
        item = _list_item_model(ann)
        if item is not None:
            yield from self._rows(self.section, item)
        else:
            model = _model_of(ann)
            assert model is not None, self.section
            yield from self._model_fields(model, self.section)

    def _model_fields(self, model: type[BaseModel], prefix: str) -> Iterator[Widget]:
        for name, info in model.model_fields.items():
            key = f"{prefix}.{name}"
            sub = _model_of(info.annotation)
            item = _list_item_model(info.annotation)
            if sub is not None:
                yield Static(f"── {key} ── {info.description or ''}", classes="group-title", markup=False)
                yield from self._model_fields(sub, key)
            elif item is not None:
                yield Static(f"── {key} ── {info.description or ''}", classes="group-title", markup=False)
                yield from self._rows(key, item)
            else:
                yield SchemaField(
                    key, info, self.state.value(key), self.state.origin(key),
                    advice=advice_for(self.state.recipe, key), disabled_reason=LOCKED.get(key, ""),
                )

    def _unknown_rows(self) -> Iterator[Widget]:
        """Keys of the loaded file the schema does not know, each with Rename (to its "did you mean") / Drop."""
        self._unknown_keys = self.state.unknown_in(self.section)
        for i, key in enumerate(self._unknown_keys):
            value, suggestion = self.state.unknown[key]
            hint = f"did you mean {suggestion}?" if suggestion else "no similar key; drop it or type it into its field"
            yield Static(f"? {key} = {format_value(value)}: unknown key — {hint}", classes="unknown-key", markup=False)
            buttons: list[Widget] = []
            if suggestion:
                buttons.append(Button(f"Rename to {suggestion.rsplit('.', 1)[-1]}", id=f"unk-ren-{i}",
                                      classes="unk-rename", compact=True))
            buttons.append(Button("Drop it", id=f"unk-drop-{i}", classes="unk-drop", compact=True))
            yield Horizontal(*buttons, classes="unknown-buttons")

    @on(Button.Pressed, ".unk-rename, .unk-drop")
    async def _unknown_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.flush()
        bid = str(event.button.id)
        key = self._unknown_keys[int(bid.rsplit("-", 1)[1])]
        if bid.startswith("unk-ren-"):
            to = self.state.rename_unknown(key)
            self.notify(f"{key} → {to}", timeout=3)
            await self.rebuild(focus=f"#f-{_safe(to)} #ctl")
        else:
            self.state.drop_unknown(key)
            self.notify(f"{key} dropped", timeout=3)
            await self.rebuild()

    def _rows(self, list_key: str, item: type[BaseModel]) -> Iterator[Widget]:
        noun = ROW_NAMES.get(list_key, "Row")
        for i in range(self.state.rows(list_key)):
            row_key = f"{list_key}[{i}]"
            yield Horizontal(
                Static(f"{noun} {i + 1}", classes="row-title"),
                Button(f"− Remove {noun.lower()} {i + 1}", id=f"rm-{_safe(list_key)}-{i}", classes="rm-row",
                       compact=True),
                classes="row-head",
            )
            yield from self._model_fields(item, row_key)
        yield Button(f"+ Add {noun.lower()}", id=f"add-{_safe(list_key)}", classes="add-row", compact=True)

    async def rebuild(self, focus: str | None = None) -> None:
        """Re-render the form (after rows were added or removed) and put the focus somewhere useful."""
        box = self.query_one("#fields", VerticalScroll)
        await box.remove_children()
        await box.mount_all(list(self.build_fields()))
        self.refresh_fields()
        if focus:
            try:
                self.query_one(focus).focus()
                return
            except Exception:
                pass
        self.focus_first()

    # ---- state → widgets ----------------------------------------------------------------------------
    def refresh_fields(self) -> None:
        st = self.state
        for f in self.query(SchemaField):
            warn = next((x for x in st.field_findings(f.key) if x.level != "error"), None)
            f.refresh_from(st.value(f.key), st.origin(f.key), st.field_error(f.key), warn)
        self.refresh_status()

    def refresh_status(self) -> None:
        st = self.state
        mine = [f for f in st.section_findings(self.section) if f.level == "error"]
        line = self.query_one("#wiz-status", Static)
        if mine:  # the full text is under the field; this line names it and begins the message
            first = mine[0]
            tail = f" (see field{f'; +{len(mine) - 1} more' if len(mine) > 1 else ''})"
            room = max(10, (self.size.width or 80) - 6 - len(first.key) - len(tail))
            msg = first.message if len(first.message) <= room else first.message[: room - 1] + "…"
            line.update(f"[b red]✗ {_esc(first.key)}[/]: {_esc(msg)}[dim]{_esc(tail)}[/]")
            return
        others = sorted({f.key.split(".")[0].split("[")[0] for f in st.errors})
        tail = f" · [red]errors on: {', '.join(others)}[/]" if others else ""
        line.update(f"[green]✓ {self.section_title} ok[/]{tail}")

    # ---- widgets → state ----------------------------------------------------------------------------
    @on(SchemaField.Edited)
    def _edited(self, event: SchemaField.Edited) -> None:
        event.stop()
        typed = isinstance(event.field.query_one("#ctl"), Input)
        self.state.set(event.key, event.value, evaluate=not typed)
        if typed:
            if self._pending is not None:
                self._pending.stop()
            self._pending = self.set_timer(DEBOUNCE_S, self.flush)
        else:
            self.refresh_fields()

    @on(SchemaField.Reset)
    def _reset(self, event: SchemaField.Reset) -> None:
        event.stop()
        self.flush()
        self.state.reset(event.key)
        warn = next((x for x in self.state.field_findings(event.key) if x.level != "error"), None)
        event.field.refresh_from(self.state.value(event.key), self.state.origin(event.key),
                                 self.state.field_error(event.key), warn, force=True)
        self.refresh_fields()
        self.notify(f"{event.key}: back to the {self.state.origin(event.key)} value", timeout=2)

    def flush(self) -> None:
        """Evaluate pending typed edits now (before leaving, on a timer after typing stops)."""
        if self._pending is not None:
            self._pending.stop()
            self._pending = None
        if self.state.dirty:
            self.state.evaluate()
        self.refresh_fields()

    @on(Button.Pressed, ".add-row")
    async def _add_row(self, event: Button.Pressed) -> None:
        event.stop()
        self.flush()
        list_key = self._list_key(str(event.button.id).removeprefix("add-"))
        i = self.state.add_row(list_key)
        await self.rebuild()
        row = f"{list_key}[{i}]."
        for f in self.query(SchemaField):
            if f.key.startswith(row):
                f.query_one("#ctl").focus()
                break

    @on(Button.Pressed, ".rm-row")
    async def _remove_row(self, event: Button.Pressed) -> None:
        event.stop()
        self.flush()
        rest = str(event.button.id).removeprefix("rm-")
        safe_list, idx = rest.rsplit("-", 1)
        list_key = self._list_key(safe_list)
        self.state.remove_row(list_key, int(idx))
        await self.rebuild(focus=f"#add-{safe_list}")

    def _list_key(self, safe: str) -> str:
        for k in ROW_NAMES:
            if _safe(k) == safe:
                return k
        return safe

    def can_leave(self) -> bool:
        self.flush()
        return True

    def action_back(self) -> None:
        self.flush()
        super().action_back()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.refresh_fields()
        self.focus_first(errors_first=True)  # back on a panel: its first error, else its top

    def current(self, key: str) -> Any:
        """The value the job will have for ``key`` (tests and the review read this)."""
        return get_path(self.state.job, key)
