"""Loss curve in braille dots: the raw losses dim, the smoothed curve bright, the whole run in view.

Own renderer instead of a plotting dependency: a braille cell is 2×4 dots, so an 80-column terminal gives
~140 horizontal samples; the run is bucketed per dot column (min/max band of the raw loss plus the mean of
the smoothed loss), which is O(steps) and draws a 3000-step history in a few milliseconds.  Smoothing is
TensorBoard's debiased EMA; the y-range ignores the top/bottom 1 % of raw losses so one spike cannot
flatten the curve.  Works in 256 colours.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# braille dot bit for (x in 0..1, y in 0..3 from the top)
_DOT = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
SMOOTHING_STEPS = (0.0, 0.6, 0.9, 0.97, 0.99)


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average (as TensorBoard's smoothing slider)."""
    if weight <= 0:
        return list(values)
    out: list[float] = []
    acc, norm = 0.0, 0.0
    for v in values:
        acc = acc * weight + (1 - weight) * v
        norm = norm * weight + (1 - weight)
        out.append(acc / norm)
    return out


def _quantile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return 0.0
    i = min(len(sorted_vals) - 1, max(0, int(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or abs(v) < 0.01:
        return f"{v:.1e}"
    return f"{v:.3f}"


def _polyline(bits: list[list[int]], points: Sequence[tuple[int, int]]) -> None:
    """Set the braille dots of a line through ``points`` (dot coordinates, x ascending)."""
    for i, (x, y) in enumerate(points):
        x0, y0 = points[i - 1] if i else (x, y)
        for xi in range(x0, x + 1):
            yi = y if xi == x or x == x0 else round(y0 + (y - y0) * (xi - x0) / (x - x0))
            cx, bx = divmod(xi, 2)
            for yy in range(min(y0 if xi == x0 else yi, yi), max(y0 if xi == x0 else yi, yi) + 1):
                cy, by = divmod(yy, 4)
                bits[cy][cx] |= _DOT[bx][by]


def _y_range(losses: Sequence[float], smooth: Sequence[float], eval_losses: Sequence[float]) -> tuple[float, float]:
    """The plotted loss range: raw 1–99 % quantiles, the smoothed curve and the eval points, padded 5 %."""
    ordered = sorted(losses)
    lo = min(_quantile(ordered, 0.01), min(smooth), *eval_losses)
    hi = max(_quantile(ordered, 0.99), max(smooth), *eval_losses)
    if hi - lo < 1e-12:
        hi, lo = hi + 1e-3, lo - 1e-3
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _buckets(steps: Sequence[int], losses: Sequence[float], smooth: Sequence[float],
             px_w: int) -> tuple[list[float], list[float], list[float], list[int]]:
    """Per dot column: raw min, raw max, smoothed sum and count — O(steps) whatever the run's length."""
    s0, span = steps[0], max(1, steps[-1] - steps[0])
    rmin = [float("inf")] * px_w
    rmax = [float("-inf")] * px_w
    ssum = [0.0] * px_w
    scnt = [0] * px_w
    for st, raw, sm in zip(steps, losses, smooth, strict=False):
        x = min(px_w - 1, (st - s0) * (px_w - 1) // span) if span else 0
        if raw < rmin[x]:
            rmin[x] = raw
        if raw > rmax[x]:
            rmax[x] = raw
        ssum[x] += sm
        scnt[x] += 1
    return rmin, rmax, ssum, scnt


def _set_column(bits: list[list[int]], x: int, y_top: int, y_bottom: int) -> None:
    """Set the dots of dot column ``x`` from ``y_top`` to ``y_bottom`` (the raw loss's min/max band)."""
    cx, bx = divmod(x, 2)
    for y in range(y_top, y_bottom + 1):
        cy, by = divmod(y, 4)
        bits[cy][cx] |= _DOT[bx][by]


def _connect(bits: list[list[int]], prev: tuple[int, int] | None, x: int, y_s: int) -> None:
    """A line from the previous data column to (``x``, ``y_s``), so sparse runs (few steps, wide plot) stay
    connected."""
    x0, y0 = prev if prev is not None else (x, y_s)
    last_y = y0
    for xi in range(x0 + 1 if prev is not None else x, x + 1):
        yi = y_s if xi == x else round(y0 + (y_s - y0) * (xi - x0) / (x - x0))
        cxi, bxi = divmod(xi, 2)
        for y in range(min(last_y, yi), max(last_y, yi) + 1):
            cy, by = divmod(y, 4)
            bits[cy][cxi] |= _DOT[bxi][by]
        last_y = yi


def _row_label(r: int, rows: int, lo: float, hi: float) -> str:
    """The y label of text row ``r``: the top, the bottom and (if there is room) the middle value."""
    if r == 0:
        return _fmt(hi)
    if r == rows - 1:
        return _fmt(lo)
    if r == rows // 2 and rows > 4:
        return _fmt((hi + lo) / 2)
    return ""


def _cell(sb: int, rb: int, eb: int) -> tuple[str, str | None]:
    """One braille cell and its style: eval over smoothed (which merges the raw band) over raw."""
    if eb:
        return chr(0x2800 | eb), "bold yellow"
    if sb:
        return chr(0x2800 | sb | rb), "bold green"
    if rb:
        return chr(0x2800 | rb), "color(66)"
    return " ", None


def _empty_plot(width: int, height: int, empty: str) -> list[Text]:
    """A plot with no data: blank lines with ``empty`` centred, dim."""
    blank = [Text(" " * width) for _ in range(height)]
    blank[height // 2] = Text(empty.center(width)[:width], style="dim")
    return blank


def render_plot(steps: Sequence[int], losses: Sequence[float], width: int, height: int,
                smoothing: float = 0.9, eval_steps: Sequence[int] = (),
                eval_losses: Sequence[float] = (), empty: str = "waiting for the first step…") -> list[Text]:
    """``height`` lines of ``width`` cells: y labels on the left, x range on the bottom line.

    ``eval_steps`` / ``eval_losses`` (one point per save, held-out clips) draw a second curve in yellow.
    """
    if width < 12 or height < 3:
        return [Text("")] * max(height, 0)
    if not losses:
        return _empty_plot(width, height, empty)
    label_w = 8
    cols, rows = width - label_w, height - 1
    px_w, px_h = cols * 2, rows * 4
    smooth = ema(losses, smoothing)
    lo, hi = _y_range(losses, smooth, eval_losses)
    s0, s1 = steps[0], steps[-1]
    span = max(1, s1 - s0)

    def ypx(v: float) -> int:
        y = int((hi - v) / (hi - lo) * (px_h - 1) + 0.5)
        return min(px_h - 1, max(0, y))

    rmin, rmax, ssum, scnt = _buckets(steps, losses, smooth, px_w)
    raw_bits = [[0] * cols for _ in range(rows)]
    smooth_bits = [[0] * cols for _ in range(rows)]
    prev: tuple[int, int] | None = None  # (x, y) of the previous column with data
    for x in range(px_w):
        if not scnt[x]:
            continue
        if smoothing > 0:
            _set_column(raw_bits, x, ypx(rmax[x]), ypx(rmin[x]))
        y_s = ypx(ssum[x] / scnt[x])
        _connect(smooth_bits, prev, x, y_s)
        prev = (x, y_s)
    eval_bits = [[0] * cols for _ in range(rows)]
    _polyline(eval_bits, [(min(px_w - 1, max(0, (st - s0) * (px_w - 1) // span)), ypx(v))
                          for st, v in zip(eval_steps, eval_losses, strict=False)])
    lines: list[Text] = []
    for r in range(rows):
        line = Text(_row_label(r, rows, lo, hi).rjust(label_w - 1)[: label_w - 1] + "┤", style="dim")
        for c in range(cols):
            line.append(*_cell(smooth_bits[r][c], raw_bits[r][c], eval_bits[r][c]))
        lines.append(line)
    left, right = f"step {s0}" + (f" · eval {_fmt(eval_losses[-1])} (held-out)" if eval_losses else ""), f"{s1}"
    axis = " " * label_w + left + right.rjust(max(1, cols - len(left)))
    lines.append(Text(axis[:width], style="dim"))
    return lines


class LossPlot(Widget):
    """The loss history of one job; call :meth:`set_data` with the (shared) lists after each poll."""

    DEFAULT_CSS = "LossPlot { height: 10; }"
    smoothing: reactive[float] = reactive(0.9)

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._steps: Sequence[int] = ()
        self._losses: Sequence[float] = ()
        self._eval: tuple[Sequence[int], Sequence[float]] = ((), ())
        self._version = 0
        self.drawn_points = 0  # how many points the last render drew (the attach benchmark waits on it)

    empty_text = "waiting for the first step…"  # what an empty plot says (a failed job: no step was trained)

    def set_data(self, steps: Sequence[int], losses: Sequence[float], eval_steps: Sequence[int] = (),
                 eval_losses: Sequence[float] = (), empty: str | None = None) -> None:
        if empty is not None:
            self.empty_text = empty
        self._steps, self._losses = steps, losses
        self._eval = (eval_steps, eval_losses)
        self._version += 1
        self.refresh()

    def cycle_smoothing(self) -> float:
        i = SMOOTHING_STEPS.index(self.smoothing) if self.smoothing in SMOOTHING_STEPS else 0
        self.smoothing = SMOOTHING_STEPS[(i + 1) % len(SMOOTHING_STEPS)]
        return self.smoothing

    @property
    def points(self) -> int:
        return len(self._losses)

    def render(self) -> Text:
        w, h = self.content_size.width, self.content_size.height
        lines = render_plot(self._steps, self._losses, w, h, self.smoothing, *self._eval, empty=self.empty_text)
        self.drawn_points = len(self._losses)
        return Text("\n").join(lines)
