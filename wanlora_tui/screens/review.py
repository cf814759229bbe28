"""Last step: the job file, what is wrong with it, what it will cost, and Submit / Save as.

Submit is disabled while the job has errors, and on press the exact TOML text is checked again through
``validate.check_file`` (what ``wanlora validate`` runs), so nothing the CLI would refuse reaches the spool.
The estimate (peak VRAM, hours, disk) comes from ``engine.estimate``; the cost needs the user's hourly price.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape as _esc
from rich.syntax import Syntax
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Static
from wanlora.engine.config.findings import Finding
from wanlora.tui.screens.wizard_base import WizardScreen

MARK = {"error": "[b red]✗[/]", "warning": "[yellow]![/]", "info": "[cyan]i[/]"}


def findings_text(findings: list[Finding]) -> str:
    if not findings:
        return "[green]✓ no errors, no warnings[/]"
    order = {"error": 0, "warning": 1, "info": 2}
    lines = []
    for f in sorted(findings, key=lambda f: order.get(f.level, 3)):
        fix = f"\n    [dim]fix:[/] {_esc(f.fix)}" if f.fix else ""
        lines.append(f"{MARK.get(f.level, '-')} [b]{_esc(f.key)}[/]: {_esc(f.message)}{fix}")
    return "\n".join(lines)


def disk_gib(job: Any) -> float:
    """LoRA checkpoints kept (+ final) and one resumable state, in GiB (caches are listed separately)."""
    from wanlora.engine.estimate import lora_params

    experts = len(job.multistage.trained())
    params = lora_params(job.target.rank, job.target.modules) * experts
    per_file = params * {"bf16": 2, "fp16": 2, "fp32": 4}[job.save.dtype]
    state = params * 12  # fp32 master + two AdamW moments
    return ((job.save.max_keep + 1) * per_file + state) / 2**30


def speed(s_per_step: float) -> str:
    """Seconds per step with the digits that matter (0.04 s/step is not "0.0 s/step")."""
    return f"{s_per_step:.2g} s/step" if s_per_step < 10 else f"{s_per_step:.0f} s/step"


def hours(h: float) -> str:
    """Wall time: seconds or minutes for short jobs, hours for long ones (engine.estimate.format_duration)."""
    from wanlora.engine.estimate import format_duration

    return format_duration(h)


def money(v: float) -> str:
    return "< 0.01" if 0 < v < 0.01 else f"{v:.2f}"


def estimate_lines(state: Any, price: float | None) -> str:
    """Peak VRAM against the GPU, hours, disk and (given a price) cost, from engine.estimate."""
    from wanlora.engine.estimate import card_gib, peak_vram, step_time

    job = state.job
    if job is None:
        return "[dim]no estimate until the job is valid[/]"
    gpu_name = state.gpus[0].name if state.gpus else None
    tier = state.tier if isinstance(state.tier, int) else None
    have = state.vram_gb
    card = card_gib(tier, have)  # the memory the trainer will plan against: this GPU's, else the tier's card
    mem = peak_vram(job, card)
    t = step_time(job, gpu_name, tier, budget_gib=card)
    fits = "" if have is None else (" [green]fits[/]" if mem.need_gib <= have else f" [b red]> {have:.0f} GiB: will not fit[/]")
    lines = [
        f"Peak VRAM  [b]{mem.need_gib:.1f} GiB[/]{fits}  ({_esc(mem.worst)})",
        f"Time       [b]{speed(t.s_per_step)}[/] × {job.training.steps} steps ≈ [b]{hours(t.hours)}[/] on {_esc(t.gpu)}",
        f"Disk       ≈ {disk_gib(job):.1f} GiB for checkpoints + state (+ latent/text caches next to the data)",
    ]
    if price is not None:
        lines.append(f"Cost       ≈ [b]{money(t.hours * price)}[/] at {price:g}/h")
    else:
        lines.append("Cost       type the GPU's hourly price below to see it")
    lines.extend(f"[dim]· {_esc(n)}[/]" for n in t.notes)
    return "\n".join(lines)


TRIAL_HINT = ("[dim]Saves the job, then runs its real trainer path on this GPU with random full-size weights for "
              "a few steps per bucket: s/step, peak VRAM and the projected hours, before you download ~70 GB. "
              "Nothing is written into the job's folders.[/]")


def run_trial_in_terminal(app: Any, path: Path) -> int:
    """``wanlora trial PATH`` in the terminal the TUI runs in (the app is suspended meanwhile; torch loads in
    the child, never in the TUI)."""
    with app.suspend():
        code = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "trial", str(path)]).returncode
        input("\n[wanlora] press Enter to return to the review… ")
    return code


class ReviewScreen(WizardScreen):
    STEP = "review"
    NEXT_LABEL = "Submit ▶"

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="review-body"):
            yield Static("", id="review-findings")
            yield Static("", id="review-estimate")
            with Horizontal(classes="review-row"):
                yield Static("Hourly price:", classes="review-label")
                yield Input(placeholder="e.g. 2.49", id="price", compact=True)
            with Horizontal(classes="review-row"):
                yield Static("Save as:", classes="review-label")
                yield Input(placeholder="path/to/job.toml", id="save-path", compact=True)
                yield Button("Save TOML", id="save", compact=True)
            if self.state.gpus:  # a GPU here: measure the job on it before committing days to it
                with Horizontal(classes="review-row"):
                    yield Static("This GPU:", classes="review-label")
                    yield Button("Try it here (wanlora trial)", id="trial", compact=True)
                yield Static(TRIAL_HINT, id="trial-hint")
            yield Static("", id="review-toml")

    def on_mount(self) -> None:
        name = self.state.job.job.name if self.state.job else "job"
        self.query_one("#save-path", Input).value = str(Path.cwd() / f"{name}.toml")
        self.render_review()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.render_review()

    def price(self) -> float | None:
        try:
            v = float(self.query_one("#price", Input).value.strip().lstrip("$€£"))
        except ValueError:
            return None
        return v if v >= 0 else None

    def render_review(self) -> None:
        st = self.state
        if st.dirty:
            st.evaluate()
        self.query_one("#review-findings", Static).update(findings_text(st.findings))
        try:
            est = estimate_lines(st, self.price())
        except Exception as e:  # an estimator bug must not hide the review
            est = f"[dim]estimate unavailable: {_esc(str(e))}[/]"
        self.query_one("#review-estimate", Static).update(est)
        toml = st.toml()
        self.query_one("#review-toml", Static).update(
            Syntax(toml, "toml", theme="ansi_dark", background_color="default") if toml else "")
        self.query_one("#next", Button).disabled = not st.can_submit
        self.refresh_status()

    @on(Input.Changed, "#price")
    def _price(self) -> None:
        self.render_review()

    @on(Button.Pressed, "#save")
    @on(Input.Submitted, "#save-path")
    def _save(self) -> None:
        path = self._write()
        if path is None:
            return
        self.notify(f"Saved {path}  (submit later with: wanlora submit {path})")

    def _write(self) -> Path | None:
        from wanlora.engine.config.jobdir import write_text_atomic

        path = Path(self.query_one("#save-path", Input).value).expanduser()
        text = self.state.toml()
        if not text:
            self.notify("The job is not complete yet: fix the errors first.", severity="error")
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text)
        except OSError as e:
            self.notify(f"Cannot write {path}: {e.strerror or e}", severity="error")
            return None
        return path

    @on(Button.Pressed, "#trial")
    def _trial(self) -> None:
        path = self._write()
        if path is None:
            return
        code = run_trial_in_terminal(self.app, path)
        self.notify(f"wanlora trial {path}: " + ("done (the report was shown in the terminal)" if code == 0
                                                  else f"exit {code}; see the terminal output"),
                    severity="information" if code == 0 else "error")

    def can_leave(self) -> bool:
        """Submit: block on any error, including those only the file-level check finds."""
        st = self.state
        if not st.can_submit:
            self.notify("The job has errors; fix them first (listed above).", severity="error")
            return False
        final = st.final_check()
        errors = [f for f in final if f.level == "error"]
        if errors:
            st.findings = final
            self.render_review()
            self.notify(f"wanlora validate refuses this job: {errors[0].key}: {errors[0].message}", severity="error")
            return False
        return True
