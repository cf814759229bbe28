"""The last lines of ``train.log`` (and the trainer's warnings), newest at the bottom.

A plain-text ``Log`` with a line cap: cheap to append, no markup parsing of trainer output (a caption
containing ``[trigger]`` must print as is).
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.widgets import Log


class LogTail(Log):
    DEFAULT_CSS = "LogTail { height: 6; }"

    def __init__(self, *, max_lines: int = 200, id: str | None = None) -> None:
        super().__init__(max_lines=max_lines, auto_scroll=True, id=id)
        self._shown = 0  # lines of the feed already written

    def sync(self, lines: Iterable[str], total_seen: int) -> None:
        """Append only lines the widget has not shown (``total_seen`` counts every line ever read)."""
        new = total_seen - self._shown
        if new <= 0:
            return
        buf = list(lines)
        self.write_lines(buf[-new:] if new < len(buf) else buf)
        self._shown = total_seen
