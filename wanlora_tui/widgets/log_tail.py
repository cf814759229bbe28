"""The last lines of ``train.log`` (and the trainer's warnings), newest at the bottom.

A plain-text ``Log`` with a line cap: cheap to append, no markup parsing of trainer output (a caption
containing ``[trigger]`` must print as is).
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.cells import cell_len
from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import Log


class LogTail(Log):
    # a line wider than the view ends in "…" (no horizontal scrolling in a 5-line tail: the cut was invisible)
    DEFAULT_CSS = "LogTail { height: 6; overflow-x: hidden; }"

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

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        _, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        index = scroll_y + y
        if width > 1 and index < len(self.lines) and cell_len(self._process_line(self.lines[index])) > width:
            strip = Strip.join([strip.crop(0, width - 1), Strip([Segment("…", self.rich_style)], 1)])
        return strip
