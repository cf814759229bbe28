"""One schema field as a form row: input control + origin badge + the schema's help + the guide's advice.

The control is chosen from the pydantic annotation (bool → checkbox, closed choices → select, anything else
→ text parsed back into the annotation's type), so a new knob in ``engine/config/schema.py`` appears in the
wizard with no TUI change.  Text that does not parse is passed on as-is: pydantic's error then names the
key, exactly as ``wanlora validate`` would.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic.fields import FieldInfo
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select, Static

ORIGIN_STYLE = {"default": "dim", "recipe": "cyan", "tier": "magenta", "user": "bold yellow"}


@dataclass(frozen=True)
class Kind:
    """How a field is edited: ``bool``, ``choice`` (closed set of values) or ``text`` (parsed)."""

    kind: Literal["bool", "choice", "text"]
    choices: tuple[Any, ...] = ()


def _branches(ann: Any) -> list[Any]:
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for a in typing.get_args(ann):
            out.extend(_branches(a))
        return out
    return [ann]


def field_kind(ann: Any) -> Kind:
    """Pick the control for an annotation."""
    branches = _branches(ann)
    if branches == [bool]:
        return Kind("bool")
    if all(typing.get_origin(b) is Literal for b in branches):
        vals: list[Any] = []
        for b in branches:
            vals.extend(typing.get_args(b))
        return Kind("choice", tuple(vals))
    return Kind("text")


def format_value(value: Any) -> str:
    """Value → the text shown in an input (lists as ``512, 768``; None as empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_text(ann: Any, text: str) -> Any:
    """Text → a value of the annotation, trying each union branch; unparseable text is returned unchanged."""
    s = text.strip()
    branches = _branches(ann)
    if s == "" and type(None) in branches:
        return None
    for b in branches:
        if typing.get_origin(b) is Literal:
            for v in typing.get_args(b):
                if str(v) == s:
                    return v
    for b in branches:
        if b is int:
            try:
                return int(s)
            except ValueError:
                pass
        elif b is float:
            try:
                return float(s)
            except ValueError:
                pass
        elif typing.get_origin(b) is list:
            inner = (typing.get_args(b) or (str,))[0]
            body = s[1:-1] if s.startswith("[") and s.endswith("]") else s
            parts = [p.strip() for p in body.split(",") if p.strip()]
            try:
                return [inner(p) if inner in (int, float) else json.loads(p) if p.startswith('"') else p for p in parts]
            except ValueError:
                pass
    if str in branches:
        return text
    return text  # let pydantic explain what is wrong


class OnOff(Checkbox):
    """A checkbox whose glyph says the value ("✓" on, blank off): colour alone is lost in 256-colour SSH."""

    @property  # type: ignore[override]
    def BUTTON_INNER(self) -> str:  # noqa: N802 - Textual's class attribute name
        return "✓" if self.value else " "


class SchemaField(Vertical, can_focus=False):
    """A knob: ``key  [control]  origin`` then help, the recipe/tier advice and this field's findings."""

    BINDINGS = [Binding("ctrl+r", "reset", "Reset to preset", show=True)]

    class Edited(Message):
        """The user changed a value (already parsed into the field's type where possible)."""

        def __init__(self, field: SchemaField, key: str, value: Any) -> None:
            super().__init__()
            self.field = field
            self.key = key
            self.value = value

    class Reset(Message):
        def __init__(self, field: SchemaField, key: str) -> None:
            super().__init__()
            self.field = field
            self.key = key

    def __init__(
        self,
        key: str,
        info: FieldInfo,
        value: Any,
        origin: str,
        *,
        advice: str = "",
        label: str | None = None,
        disabled_reason: str = "",
    ) -> None:
        safe_id = "f-" + key.replace(".", "-").replace("[", "-").replace("]", "")
        super().__init__(id=safe_id, classes="field")
        self.key = key
        self.info = info
        self.kind = field_kind(info.annotation)
        self._value = value
        self._origin = origin
        self._advice = advice
        self._label = label or key.rsplit(".", 1)[-1]
        self._disabled_reason = disabled_reason

    def compose(self) -> ComposeResult:
        with Horizontal(classes="field-row"):
            yield Label(self._label, classes="field-label")
            yield self._make_control()
            yield Static(self._badge_text(), classes="badge")
        yield Static(self._help_text(), classes="field-help")
        yield Static("", classes="field-finding", markup=False)

    def _help_text(self) -> Text:
        """The schema's help, then (highlighted) the recipe's advice for this knob."""
        help_text = self.info.description or ""
        if self._disabled_reason:
            help_text = f"{help_text} ({self._disabled_reason})"
        t = Text(help_text, style="dim")
        if self._advice:
            t.append("\n▸ " + self._advice, style="italic")
        return t

    def on_mount(self) -> None:
        self.query_one(".field-finding", Static).display = False

    def _make_control(self) -> Any:
        disabled = bool(self._disabled_reason)
        cid = "ctl"
        if self.kind.kind == "bool":
            v = bool(self._value)
            return OnOff("on" if v else "off", v, compact=True, id=cid, disabled=disabled)
        if self.kind.kind == "choice":
            opts = [(format_value(c), c) for c in self.kind.choices]
            value = self._value if self._value in self.kind.choices else self.kind.choices[0]
            return Select(opts, value=value, allow_blank=False, compact=True, id=cid, disabled=disabled)
        return Input(format_value(self._value), compact=True, id=cid, disabled=disabled, select_on_focus=False)

    def _badge_text(self) -> str:
        return f"[{ORIGIN_STYLE.get(self._origin, 'dim')}]{self._origin}[/]"

    # ---- updates from the state ---------------------------------------------------------------------
    def refresh_from(self, value: Any, origin: str, finding: Any | None, warning: Any | None = None,
                     *, force: bool = False) -> None:
        """Show the state's current value/origin/finding without emitting an edit."""
        self._origin = origin
        self._value = value
        self.query_one(".badge", Static).update(self._badge_text())
        box = self.query_one(".field-finding", Static)
        shown = finding or warning
        if shown is not None:
            mark = "✗" if shown.level == "error" else "!"
            fix = f" — {shown.fix}" if shown.fix else ""
            box.update(f"{mark} {shown.message}{fix}")
            box.set_class(shown.level == "error", "error")
            box.set_class(shown.level != "error", "warning")
            box.display = True
        else:
            box.display = False
        self.set_class(finding is not None, "has-error")
        ctl = self.query_one("#ctl")
        if isinstance(ctl, Input) and ctl.has_focus and not force:
            return  # never rewrite what the user is typing
        self._set_control(value)

    def _set_control(self, value: Any) -> None:
        ctl = self.query_one("#ctl")
        with self.prevent(Input.Changed, Checkbox.Changed, Select.Changed):
            if isinstance(ctl, Checkbox):
                if ctl.value != bool(value):
                    ctl.value = bool(value)
                ctl.label = "on" if ctl.value else "off"
            elif isinstance(ctl, Select):
                if value in self.kind.choices and ctl.value != value:
                    ctl.value = value
            elif isinstance(ctl, Input):
                if parse_text(self.info.annotation, ctl.value) != value:
                    ctl.value = format_value(value)

    # ---- edits from the user ------------------------------------------------------------------------
    def _emit(self, value: Any) -> None:
        """Report a real change only: controls also fire Changed when mounted with their first value."""
        if value == self._value and type(value) is type(self._value):
            return
        self._value = value
        self.post_message(self.Edited(self, self.key, value))

    @on(Input.Changed, "#ctl")
    def _input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._emit(parse_text(self.info.annotation, event.value))

    @on(Checkbox.Changed, "#ctl")
    def _check_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        event.checkbox.label = "on" if event.value else "off"
        self._emit(bool(event.value))

    @on(Select.Changed, "#ctl")
    def _select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is not Select.NULL:
            self._emit(event.value)

    def action_reset(self) -> None:
        self.post_message(self.Reset(self, self.key))
