"""Text for the terminal the user actually has: its width, paragraphs wrapped on word boundaries, lines shortened
with "…" — never a line the terminal folds mid-word (an 80×24 SSH session is the common case)."""

from __future__ import annotations

import shutil
import textwrap

MIN_WIDTH = 40  # below this, wrapping only makes things worse


def terminal_width(fallback: int = 100) -> int:
    """Columns of the terminal (``$COLUMNS`` first, as ``shutil.get_terminal_size`` reads it); ``fallback`` when
    the output is not a terminal (a pipe, a file, the tests)."""
    cols = shutil.get_terminal_size((fallback, 24)).columns
    return max(MIN_WIDTH, cols if cols > 0 else fallback)


def wrap(text: str, width: int, *, indent: str = "", subsequent_indent: str | None = None) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken only between words (a path or URL longer
    than a line stays whole, on its own line, rather than cut in two)."""
    return textwrap.wrap(text, width, initial_indent=indent,
                         subsequent_indent=indent if subsequent_indent is None else subsequent_indent,
                         break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]


def ellipsize(line: str, width: int) -> str:
    """``line`` cut to ``width`` characters, ending in "…" when something was cut."""
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"
