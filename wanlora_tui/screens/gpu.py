"""Step 2: which GPU this machine has and which VRAM tier's settings apply (detected, overridable).

Detection (NVML) runs in a worker so a slow driver never freezes the screen; with no GPU the user picks the
tier of the card the job will run on (e.g. preparing a job on a laptop).
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape as _esc
from textual import on, work
from textual.app import ComposeResult
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option
from wanlora.engine.config.schema import VRAM_TIERS
from wanlora.tui.screens.wizard_base import WizardScreen
from wanlora.tui.wizard_state import tier_meta


def gpu_lines(gpus: list[Any]) -> str:
    if not gpus:
        return ("[b yellow]No GPU found[/] (no NVIDIA driver or GPU visible here).\n"
                "Pick the tier of the GPU the job will run on; the daemon checks it again at start.")
    rows = [f"GPU {g.index}: [b]{g.name}[/]  {g.total_gb:.0f} GiB total, {g.free_gb:.1f} GiB free" for g in gpus]
    return "\n".join(rows)


class GpuScreen(WizardScreen):
    """Detected GPUs on top, the tier list below with the detected tier highlighted."""

    STEP = "gpu"

    def compose_body(self) -> ComposeResult:
        yield Static("Detecting GPUs…", id="gpu-info")
        yield OptionList(*[Option(self._tier_label(t), id=str(t)) for t in VRAM_TIERS], id="tiers")
        yield Static("", id="tier-advice")

    def _tier_label(self, t: int, detected: int | None = None) -> str:
        title = tier_meta(t).get("title", f"{t} GB")
        mark = "  ← detected" if detected == t else ""
        return f"{title}{mark}"

    def on_mount(self) -> None:
        self.query_one("#tiers", OptionList).focus()
        self.refresh_status()
        if self.host.gpu_cache is not None:
            self._show_gpus(self.host.gpu_cache)
        else:
            self._detect()

    @work(thread=True, exclusive=True, group="gpu-detect")
    def _detect(self) -> None:
        gpus = self.host.detect_gpus()
        self.app.call_from_thread(self._show_gpus, gpus)

    def _show_gpus(self, gpus: list[Any]) -> None:
        from wanlora.engine.config.gpu import pick_tier

        self.host.gpu_cache = gpus
        self.state.gpus = list(gpus)
        self.query_one("#gpu-info", Static).update(gpu_lines(gpus))
        detected = pick_tier(max(g.free_gb for g in gpus)) if gpus else None
        ol = self.query_one("#tiers", OptionList)
        for i, t in enumerate(VRAM_TIERS):
            ol.replace_option_prompt_at_index(i, self._tier_label(t, detected))
        current = self.state.tier if isinstance(self.state.tier, int) else (detected or 24)
        ol.highlighted = list(VRAM_TIERS).index(current)
        self._advice(current)

    def _advice(self, tier: int) -> None:
        meta = tier_meta(tier)
        self.query_one("#tier-advice", Static).update(f"[b]Tier {tier}:[/b] {_esc(str(meta.get('advice', '')))}")

    @on(OptionList.OptionHighlighted, "#tiers")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._advice(int(str(event.option.id)))

    @on(OptionList.OptionSelected, "#tiers")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.action_next()

    def can_leave(self) -> bool:
        if self.host.gpu_cache is None:
            self.notify("Still detecting GPUs…")
            return False
        ol = self.query_one("#tiers", OptionList)
        tier = VRAM_TIERS[ol.highlighted or 0]
        if tier != self.state.tier:
            self.state.set_tier(tier)
        elif self.state.job is None:
            self.state.evaluate()
        return True

    def refresh_status(self) -> None:
        self.query_one("#wiz-status", Static).update("↑/↓ choose the tier · enter to continue")
