"""One job, live: progress with the trainer's ETA, loss curve, expert/timestep, GPU, log, checkpoints.

Data comes from the job folder (``status.json`` + ``events.jsonl`` via an EventCursor + ``train.log``), so
the view works while the daemon is down and reattaching shows the whole history at once.  Polling is a
thread worker re-armed by a timer only after the previous poll has been drawn (polls never overlap) and
widgets are redrawn only when something changed.  p/r/c/s go through the daemon, each after a yes/no.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape as _esc
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, Static
from wanlora.tui.job_model import (
    JobFeed,
    fmt_eta,
    last_error_lines,
    live_state,
    lora_files,
    newest_pair,
    output_dir,
)
from wanlora.tui.widgets.gpu import GpuPanel
from wanlora.tui.widgets.log_tail import LogTail
from wanlora.tui.widgets.loss_plot import LossPlot

CONTROL = {
    "pause": ("Pause job {id}? The trainer saves a checkpoint, then frees the GPU.", "Pause"),
    "resume": ("Resume job {id} from its newest checkpoint?", "Resume"),
    "cancel": ("Cancel job {id}? Training stops; checkpoints already written stay.", "Cancel job"),
    "save-now": ("Save a checkpoint of job {id} now (at the next step)?", "Save now"),
}


# p/r/c/s in every screen that controls jobs (ControlMixin handles them)
CONTROL_BINDINGS = [
    Binding("p", "pause", "Pause"),
    Binding("r", "resume", "Resume"),
    Binding("c", "cancel", "Cancel"),
    Binding("s", "save_now", "Save now"),
]


class ControlMixin:
    """p/r/c/s with a confirmation, sent through the daemon (shared by the job view and the job list)."""

    def _control(self, verb: str) -> None:
        from wanlora.tui.screens.confirm import ConfirmScreen

        jid = self.selected_job_id()
        screen: Any = self
        if jid is None:
            screen.notify("No job selected.")
            return
        question, yes = CONTROL[verb]

        def answered(ok: bool | None) -> None:
            if ok:
                screen.run_control(verb, jid)

        screen.app.push_screen(ConfirmScreen(question.format(id=jid), yes=yes, no="Keep going"), answered)

    @work(thread=True, group="control")
    def run_control(self, verb: str, job_id: str) -> None:
        from wanlora.tui import daemon_link

        screen: Any = self
        ok, msg = daemon_link.control(screen.app.home, verb, job_id)
        screen.app.call_from_thread(screen.notify, msg, severity="information" if ok else "error", timeout=6)

    def action_pause(self) -> None:
        self._control("pause")

    def action_resume(self) -> None:
        self._control("resume")

    def action_cancel(self) -> None:
        self._control("cancel")

    def action_save_now(self) -> None:
        self._control("save-now")


class JobScreen(ControlMixin, Screen[None]):
    BINDINGS = [
        *CONTROL_BINDINGS,
        Binding("m", "smoothing", "Smoothing"),
        Binding("escape,b", "back", "Jobs"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__(name=f"job-{job_id}")
        self.job_id = job_id
        self.feed: JobFeed | None = None
        self._daemon_row: dict[str, Any] | None = None
        self._log_seen = 0

    def selected_job_id(self) -> str | None:
        return self.job_id

    def compose(self) -> ComposeResult:
        yield Static(f"job {self.job_id}", id="job-head")
        with Horizontal(id="job-progress"):
            yield ProgressBar(total=1, show_eta=False, id="job-bar")
            yield Static("", id="job-step")
        yield Static("", id="job-stats")
        yield Static("", id="job-problem", markup=False)
        yield LossPlot(id="job-loss")
        with Horizontal(id="job-bottom"):
            yield GpuPanel("", id="job-gpu")
            yield Static("", id="job-files")
        yield LogTail(id="job-log")
        yield Footer()

    def on_mount(self) -> None:
        app: Any = self.app
        self.feed = JobFeed(app.home / "jobs" / self.job_id)
        self._poll()

    # ---- polling ------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="job-poll")
    def _poll(self) -> None:
        from wanlora.tui import daemon_link

        assert self.feed is not None
        changed = self.feed.poll()
        row = daemon_link.job_status(self.app.home, self.job_id)  # type: ignore[attr-defined]
        if row != self._daemon_row:
            self._daemon_row = row
            changed = True
        self.app.call_from_thread(self._after_poll, changed)

    def _after_poll(self, changed: bool) -> None:
        if not self.is_attached:  # the screen was closed while the poll ran in its thread
            return
        try:
            if changed:
                self.render_job()
            else:
                self._render_head()  # the STALE verdict depends on the clock, not on new data
        except NoMatches:  # the app is tearing the screen down under the poll: nothing left to draw
            return
        if self.is_attached:
            app: Any = self.app
            self.set_timer(app.poll_s, self._poll)

    # ---- drawing ------------------------------------------------------------------------------------
    def render_job(self) -> None:
        f = self.feed
        assert f is not None
        self._render_head()
        st = f.status or {}
        last = f.last_step
        step = int(st.get("step") or last.get("step") or 0)
        total = int(st.get("total_steps") or last.get("total_steps") or 0)
        bar = self.query_one("#job-bar", ProgressBar)
        bar.update(total=max(total, 1), progress=step)
        eta = st.get("eta_s", last.get("eta_s"))
        app: Any = self.app
        state, _reason, _stale = live_state(f.status, self._daemon_row, app.clock())
        # only a running job has an ETA; the others say what they are waiting for
        eta_txt = {"completed": "done", "paused": "paused: `wanlora resume` continues it",
                   "queued": "queued", "failed": "failed", "cancelled": "cancelled",
                   "stopped": "stopped"}.get(state, f"ETA {fmt_eta(eta)} (trainer)")
        self.query_one("#job-step", Static).update(f" {step}/{total or '?'} · {eta_txt}")
        parts = []
        if last.get("expert") or st.get("expert"):
            parts.append(f"expert [b]{last.get('expert') or st.get('expert')}[/]")
        if last.get("timestep") is not None:
            parts.append(f"t {float(last['timestep']):.0f}")
        if last.get("s_per_step") is not None:
            parts.append(f"{float(last['s_per_step']):.2f} s/step")
        if last.get("lr") is not None:
            parts.append(f"lr {float(last['lr']):.1e}")
        if f.losses:
            parts.append(f"loss {f.losses[-1]:.4f}")
        self.query_one("#job-stats", Static).update(" · ".join(parts) or "[dim]no steps yet[/]")
        plot = self.query_one("#job-loss", LossPlot)
        finished = state in ("completed", "failed", "cancelled", "stopped", "paused")
        plot.set_data(f.steps, f.losses, f.eval_steps, f.eval_losses,
                      empty="no step was trained" if finished else "waiting for the first step…")
        gpus = (self._daemon_row or {}).get("gpus") or st.get("gpus")
        gpu_panel = self.query_one("#job-gpu", GpuPanel)
        gpu_panel.display = not finished  # a finished job's GPU is someone else's: room for its files
        gpu_panel.show(gpus, last.get("peak_vram_gb"))
        files = self.query_one("#job-files", Static)
        files.set_class(finished, "finished")  # finished: full width, full names, wrapped (nothing cut)
        files.update(self._files_text(finished))
        problem = self.query_one("#job-problem", Static)
        text = self._problem_text(state)
        problem.display = bool(text)
        problem.update(text)
        log = self.query_one("#job-log", LogTail)
        log.display = state != "failed"  # the failure box shows the log's last lines instead
        lines = list(f.log_lines) if f.log_lines else list(f.notes)
        total_seen = f.log_total if f.log_lines else len(f.notes)
        log.sync(lines, total_seen)

    def _render_head(self) -> None:
        f = self.feed
        assert f is not None
        app: Any = self.app
        state, reason, stale = live_state(f.status, self._daemon_row, app.clock())
        name = (self._daemon_row or {}).get("name") or _name(f)
        shown = "[b red]STALE[/] (no heartbeat; trainer gone or hung)" if stale else _state_markup(state)
        why = f" · {_esc(reason)}" if reason and not stale and reason != state and state != "failed" else ""
        self.query_one("#job-head", Static).update(f"job {self.job_id} · [b]{_esc(str(name))}[/] · {shown}{why}")

    def _problem_text(self, state: str) -> str:
        """A failed job: its reason and message in full, then the last lines of its log (nothing cut)."""
        if state != "failed":
            return ""
        f = self.feed
        assert f is not None
        row, st = self._daemon_row or {}, f.status or {}
        reason = row.get("reason") or st.get("reason") or "failed"
        message = row.get("message") or st.get("message") or ""
        lines = [f"✗ failed ({reason}): {message}".rstrip(": ")]
        tail = last_error_lines(f.dir)
        if tail:
            lines.append("last lines of train.log:")
            lines.extend(f"  {ln}" for ln in tail)
        lines.append(f"fix the job (`wanlora edit {self.job_id}`), then `wanlora retry {self.job_id}`")
        return "\n".join(lines)

    def _files_text(self, finished: bool = False) -> str:
        f = self.feed
        assert f is not None
        folder = output_dir(f.dir, self._daemon_row)
        loras = lora_files(folder)
        samples = f.files("samples")
        if not finished:
            lines = [f"checkpoints: {len(loras)}"]
            lines.extend(f"  {p.name}" for p in loras[-2:])
            lines.append(f"previews: {len(samples)}" + (f"  {samples[-1].name}" if samples else ""))
            return "\n".join(lines)
        pair = newest_pair(loras)
        lines = [f"LoRAs ({len(loras)} files) in {folder}/"]
        lines.extend(f"  {p.name}" for p in pair)
        if pair:
            lines.append("ComfyUI: one LoRA loader per expert's model (high_noise file → high-noise model, low_noise → low)")
            lines.append("diffusers: pipe.load_lora_weights(high); pipe.load_lora_weights(low, load_into_transformer_2=True)")
        if samples:
            lines.append(f"previews: {len(samples)}  newest {samples[-1].name}")
        lines.extend(self._push_lines())
        return "\n".join(lines)

    def _push_lines(self) -> list[str]:
        """The Hub upload ([save] push_to_hub): the daemon's word, else its state file (daemon down)."""
        from wanlora.daemon.hub_push import describe, read_state

        f = self.feed
        assert f is not None
        push = (self._daemon_row or {}).get("push")
        if not isinstance(push, dict) and self.job_id.isdigit():
            push = read_state(f.dir.parent.parent, int(self.job_id))
        if not isinstance(push, dict):
            return []
        first, *rest = describe(push)
        return [_esc(f"Hub: {first}"), *(_esc(f"  {ln}") for ln in rest)]  # server words may hold [brackets]

    # ---- keys ---------------------------------------------------------------------------------------
    def action_smoothing(self) -> None:
        v = self.query_one("#job-loss", LossPlot).cycle_smoothing()
        self.notify(f"loss smoothing {v:g}", timeout=1.5)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()


def _name(feed: JobFeed) -> str:
    from wanlora.tui.job_model import job_name

    return job_name(feed.dir)


def _state_markup(state: str) -> str:
    color = {"running": "green", "completed": "cyan", "failed": "red", "cancelled": "yellow",
             "paused": "yellow", "queued": "blue"}.get(state, "white")
    return f"[b {color}]{(state or '?').upper()}[/]"
