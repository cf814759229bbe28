"""The MODEL panel: the generic panel, plus the Wan 2.2 weights already on this machine (``wanlora model find``).

ComfyUI users have the experts, the text encoder and the VAE on disk; the panel lists what it found (read
from safetensors headers in a worker thread, so the form is usable at once) and one button fills the
``model.*_file`` keys — and ``quantization.transformer = "fp8"`` for fp8-scaled experts — with the best file
per part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Button, Static
from wanlora.tui.screens.panel import PanelScreen

MAX_ROWS = 5


class ModelPanelScreen(PanelScreen):
    search_dirs: list[Path] | None = None  # None = `wanlora model find`'s usual places; tests set a folder

    def __init__(self, title: str = "MODEL") -> None:
        super().__init__("model", title)
        self.found_values: dict[str, str] = {}

    def compose_body(self) -> ComposeResult:
        yield Static(self.intro_text(), id="panel-intro", markup=False)
        yield Static("Looking for Wan 2.2 weights on this machine (ComfyUI models/, HF cache) …", id="found",
                     markup=False)
        yield Button("Use the files found", id="use-found", compact=True)
        with VerticalScroll(id="fields"):
            yield from self.build_fields()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#use-found", Button).display = False
        self.scan()

    @work(exclusive=True, group="model-find")
    async def scan(self) -> None:
        import asyncio

        from wanlora.engine.model.find import find_parts, suggestions

        found = await asyncio.to_thread(find_parts, self.search_dirs, self.config_root())
        if self.is_mounted:
            self.show_found(found, suggestions(found))

    def config_root(self) -> Path | None:
        """Check shapes against the job's local diffusers folder when it names one (else Wan 2.2 I2V A14B's)."""
        name = str(self.state.value("model.name_or_path") or "").strip()
        folder = Path(name).expanduser() if name else None
        return folder if folder is not None and (folder / "model_index.json").is_file() else None

    def show_found(self, found: Any, values: dict[str, str]) -> None:
        from wanlora.engine.model import weight_files as wf

        rows = [c for c in found.candidates if c.usable]
        if not rows and not found.diffusers_folders:
            self.query_one("#found", Static).update("No Wan 2.2 I2V weights found on this machine; the model comes "
                                                    "from model.name_or_path (`wanlora model pull` fetches only "
                                                    "what the job needs).")
            return
        lines = ["Found on this machine:"]
        for c in rows[:MAX_ROWS]:
            side = wf.PART_LABEL.get(c.part or "", "a Wan expert (side unknown)").removeprefix("the ")
            lines.append(f"  {side}: {c.path.name} ({c.report.precision}, {wf._gb(c.report.nbytes)})")
        if len(rows) > MAX_ROWS:
            lines.append(f"  … {len(rows) - MAX_ROWS} more (`wanlora model find`)")
        lines += [f"  diffusers folder: {p}" for p in found.diffusers_folders[:1]]
        self.query_one("#found", Static).update("\n".join(lines))
        self.found_values = values
        self.query_one("#use-found", Button).display = bool(values)

    @on(Button.Pressed, "#use-found")
    def use_found(self, event: Button.Pressed) -> None:
        event.stop()
        self.flush()
        for key, value in self.found_values.items():
            self.state.set(key, value, evaluate=False)
        self.state.evaluate()
        self.refresh_fields()
        self.notify(f"set {', '.join(k.split('.', 1)[1] for k in self.found_values)}", timeout=3)
