"""Step after the panels: what is actually in each dataset folder, before a GPU is rented for hours.

``engine.data.scan.scan_folder`` runs in a worker (probing clips takes a moment); the table shows per
dataset the clip/image count, durations, resolutions, missing captions and unreadable files, and the
recipe's clip-count advice.  Nothing here blocks: validation (review step) is what refuses a job.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Button, DataTable, Static
from wanlora.tui.screens.wizard_base import WizardScreen
from wanlora.tui.wizard_state import recipe_meta


def summarize(report: Any) -> dict[str, str]:
    """One row of the scan table from a FolderReport."""
    vids, imgs = report.videos, report.images
    durs = [c.duration_s for c in vids]
    if durs:
        dur = f"{min(durs):.1f}/{statistics.median(durs):.1f}/{max(durs):.1f}s"
    else:
        dur = "-"
    sizes = Counter(f"{c.width}x{c.height}" for c in report.usable)
    res = ", ".join(f"{s}×{n}" if n > 1 else s for s, n in sizes.most_common(2))
    if len(sizes) > 2:
        res += f" +{len(sizes) - 2}"
    return {
        "clips": f"{len(vids)}v {len(imgs)}i",
        "durations": dur,
        "sizes": res or "-",
        "no caption": str(len(report.missing_captions)),
        "unreadable": str(len(report.unreadable)),
    }


def problems(report: Any, meta: dict[str, Any]) -> list[str]:
    """Plain-words notes under the table: unreadable files by name, caption gaps, too few clips."""
    out = [f"✗ {c.path.name}: {c.error}" for c in report.unreadable[:5]]
    if len(report.unreadable) > 5:
        out.append(f"✗ … {len(report.unreadable) - 5} more unreadable")
    n = len(report.usable)
    lo = meta.get("clips_min")
    if lo and n < lo:
        out.append(f"! only {n} usable clip(s); the {meta.get('title', 'recipe')} recipe wants {lo}-{meta.get('clips_max')}")
    if report.missing_captions:
        out.append(f"! {len(report.missing_captions)} file(s) without a caption file get default_caption")
    return out


class DatasetScanScreen(WizardScreen):
    STEP = "scan"

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="scan-body"):
            yield DataTable(id="scan-table", cursor_type="row", zebra_stripes=True)
            yield Static("Scanning…", id="scan-notes", markup=False)
            yield Button("Caption them now", id="caption-now", compact=True)  # shown with uncaptioned clips + GPU

    def on_mount(self) -> None:
        t = self.query_one("#scan-table", DataTable)
        for col in ("#", "folder", "clips", "durations", "sizes", "no caption", "unreadable"):
            t.add_column(col, key=col)
        self.query_one("#caption-now", Button).display = False
        self.uncaptioned: list[tuple[str, int]] = []  # (folder, clips without a caption file)
        self.query_one("#next", Button).focus()
        self.refresh_status()
        self._scan()

    @work(thread=True, exclusive=True, group="scan")
    def _scan(self) -> None:
        from wanlora.engine.data.scan import ScanError, scan_folder

        job = self.state.job
        rows: list[tuple[int, str, dict[str, str] | None, list[str]]] = []
        self.uncaptioned = []
        meta = recipe_meta(self.state.recipe)
        for i, ds in enumerate(job.datasets if job else []):
            if not ds.folder.strip():
                rows.append((i, "(not set)", None, ["✗ no folder set: go back (ctrl+b) to DATASETS"]))
                continue
            try:
                rep = scan_folder(ds.folder, ds.caption_ext)
            except (ScanError, OSError, ValueError) as e:
                rows.append((i, ds.folder, None, [f"✗ {e}"]))
                continue
            rows.append((i, ds.folder, summarize(rep), problems(rep, meta)))
            if rep.missing_captions:
                self.uncaptioned.append((ds.folder, len(rep.missing_captions)))
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows: list[tuple[int, str, dict[str, str] | None, list[str]]]) -> None:
        t = self.query_one("#scan-table", DataTable)
        t.clear()
        notes: list[str] = []
        for i, folder, summ, probs in rows:
            short = folder if len(folder) <= 24 else "…" + folder[-23:]
            if summ is None:
                t.add_row(str(i + 1), short, "-", "-", "-", "-", "-", key=str(i))
            else:
                t.add_row(str(i + 1), short, *summ.values(), key=str(i))
            notes.extend(f"dataset {i + 1}: {p}" for p in probs)
        if not rows:
            notes.append("✗ no datasets: go back (ctrl+b) and add a folder")
        notes.extend(self._caption_notes())
        self.query_one("#scan-notes", Static).update("\n".join(notes) or "✓ every file is readable and captioned")


    # ------------------------------------------------------------------ captions for uncaptioned clips
    def _caption_notes(self) -> list[str]:
        """The offer: a button with a GPU, else the command to run on the GPU machine."""
        from wanlora.tui.caption_offer import caption_args, command_line

        failure = [self.caption_failure] if getattr(self, "caption_failure", "") else []
        self.caption_failure = ""
        if not self.uncaptioned or self.state.job is None:
            self.query_one("#caption-now", Button).display = False
            return failure
        n = sum(k for _f, k in self.uncaptioned)
        gpu = bool(self.state.gpus)
        self.query_one("#caption-now", Button).display = gpu
        head = (f"{n} clip(s) have no caption: \"Caption them now\" writes them with a video model (GPU), or run:"
                if gpu else f"{n} clip(s) have no caption; on a GPU machine, caption them with:")
        return failure + [head] + [f"  {command_line(caption_args(self.state.job, self.state.recipe, f))}"
                         for f, _k in self.uncaptioned]

    @on(Button.Pressed, "#caption-now")
    def caption_now(self) -> None:
        self.query_one("#caption-now", Button).disabled = True
        self._caption([f for f, _k in self.uncaptioned])

    @work(thread=True, exclusive=True, group="caption")
    def _caption(self, folders: list[str]) -> None:
        from wanlora.tui.caption_offer import caption_args, run_caption

        notes = self.query_one("#scan-notes", Static)
        for folder in folders:
            args = caption_args(self.state.job, self.state.recipe, folder)
            code = run_caption(args, lambda line: self.app.call_from_thread(notes.update, f"captioning: {line}"))
            if code != 0:
                self.caption_failure = (f"✗ captioning {folder} failed (exit {code}); run the command below in a "
                                        "shell to see why")
                break
        self.app.call_from_thread(self._caption_done)

    def _caption_done(self) -> None:
        self.query_one("#caption-now", Button).disabled = False
        self._scan()
