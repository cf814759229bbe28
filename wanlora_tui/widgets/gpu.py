"""GPU telemetry lines (util, VRAM, temperature, power) from the job's status / heartbeat data.

The daemon and trainer put NVML readings into ``status.json`` (``gpus``: a list of per-device dicts);
this widget only formats what is there, so it works from the files alone and shows "-" where a value is
missing (e.g. a CPU test run).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static


def _bar(frac: float, width: int = 10) -> str:
    frac = min(1.0, max(0.0, frac))
    full = int(frac * width + 0.5)
    return "█" * full + "░" * (width - full)


def _num(d: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        v = d.get(k)
        if isinstance(v, int | float):
            return float(v)
    return None


def gpu_text(gpus: list[dict[str, Any]] | None, peak_vram_gb: float | None = None) -> Text:
    """One line per GPU: ``GPU0 ████░░ 87%  61.2/79.6 GiB  71°C  480 W``."""
    out = Text()
    if not gpus:
        out.append("GPU  no telemetry", style="dim")
        if peak_vram_gb is not None:
            out.append(f"  (trainer peak {peak_vram_gb:.1f} GiB)")
        return out
    for i, g in enumerate(gpus):
        if i:
            out.append("\n")
        util = _num(g, "util", "util_pct", "utilization")
        used = _num(g, "mem_used_gb")
        total = _num(g, "mem_total_gb")
        if used is None and (mb := _num(g, "mem_used_mb")) is not None:
            used = mb / 1024
        if total is None and (mb := _num(g, "mem_total_mb")) is not None:
            total = mb / 1024
        temp = _num(g, "temp_c", "temperature")
        power = _num(g, "power_w")
        idx = g.get("idx", g.get("index", i))
        out.append(f"GPU{idx} ", style="bold")
        if util is not None:
            style = "green" if util >= 70 else "yellow" if util >= 30 else "red"
            out.append(_bar(util / 100, 5), style=style)
            out.append(f" {util:3.0f}%")
        else:
            out.append("util -")
        if used is not None and total:
            out.append(f" {used:.1f}/{total:.0f}G")
        if temp is not None:
            out.append(f" {temp:.0f}°C", style="red" if temp >= 85 else "")
        if power is not None:
            out.append(f" {power:.0f}W")
    if peak_vram_gb is not None:
        out.append(f"\npeak {peak_vram_gb:.1f} GiB (trainer)", style="dim")
    return out


class GpuPanel(Static):
    """Shows :func:`gpu_text`; updated by the job screen after each poll."""

    def show(self, gpus: list[dict[str, Any]] | None, peak_vram_gb: float | None = None) -> None:
        self.update(gpu_text(gpus, peak_vram_gb))
