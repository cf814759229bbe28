"""All jobs of this home: state + reason, progress, the trainer's ETA, last loss.  Enter opens one.

Rows come from ``<home>/jobs/*`` (status files) merged with the daemon's list when it is up, plus jobs
still waiting in the spool; a poll every couple of seconds updates cells in place (the cursor stays put).
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from wanlora.tui.job_model import JobSummary, fmt_eta, list_jobs
from wanlora.tui.screens.job import CONTROL_BINDINGS, ControlMixin

# Fixed widths that add up to 80 columns with DataTable's cell padding (1 each side): name, id, state,
# progress and ETA always fit; the reason takes what is left and is shortened with "…".
COLUMNS = ("id", "name", "state", "progress", "ETA", "reason")
WIDTHS = {"id": 4, "name": 20, "state": 9, "progress": 11, "ETA": 7, "reason": 15}
LIST_POLL_FACTOR = 2.0  # the list polls at half the job view's rate


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def row_cells(j: JobSummary) -> tuple[str, ...]:
    prog = f"{j.step}/{j.total}" if j.total else "-"
    eta = fmt_eta(j.eta_s) if j.state == "running" and not j.stale else "-"
    return (_cut(j.id, WIDTHS["id"]), _cut(j.name, WIDTHS["name"]), _cut(j.shown_state, WIDTHS["state"]),
            _cut(prog, WIDTHS["progress"]), eta, _cut(j.reason if j.reason != j.state else "", WIDTHS["reason"]))


def spooled_cells(s: Any, daemon_up: bool) -> tuple[str, ...]:
    """A job still in the spool: no id yet, its name from the file, "submitted"."""
    reason = "being taken in" if daemon_up or s.claimed else "waiting for daemon"
    return ("-", _cut(s.name, WIDTHS["name"]), "submitted", "-", "-", _cut(reason, WIDTHS["reason"]))


class DashboardScreen(ControlMixin, Screen[None]):
    BINDINGS = [
        Binding("enter", "open", "Open", show=True),
        Binding("n", "new", "New job"),
        *CONTROL_BINDINGS,
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Static("wanlora · jobs", id="dash-head")
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="dash-note")
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#jobs", DataTable)
        for c in COLUMNS:
            t.add_column(c, key=c, width=WIDTHS[c])
        t.focus()
        self._poll()

    def selected_job_id(self) -> str | None:
        t = self.query_one("#jobs", DataTable)
        if t.row_count == 0:
            return None
        key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key
        return str(key.value) if key.value and not str(key.value).startswith("spool:") else None

    @work(thread=True, exclusive=True, group="dash-poll")
    def _poll(self) -> None:
        from wanlora.tui import daemon_link

        app: Any = self.app
        rows = daemon_link.daemon_jobs(app.home)
        jobs = list_jobs(app.home, rows, now=app.clock())
        # a folder without a queue row was removed (`remove`, `clean`): the daemon's list, else queue.db itself
        listed = {str(r.get("id")) for r in rows} if rows is not None else daemon_link.queued_ids(app.home)
        if listed is not None:
            jobs = [j for j in jobs if j.id in listed]
        pending = daemon_link.spooled(app.home)
        app.call_from_thread(self._show, jobs, pending, rows is not None)

    def _show(self, jobs: list[JobSummary], pending: list[Any], daemon_up: bool) -> None:
        if not self.is_attached:  # the app is closing while the poll ran in its thread
            return
        try:
            t = self.query_one("#jobs", DataTable)
        except NoMatches:  # torn down under the poll
            return
        keys = {str(k.value) for k in t.rows}
        wanted: dict[str, tuple[str, ...]] = {j.id: row_cells(j) for j in jobs}
        for sp in pending:
            wanted[f"spool:{sp.spool_id}"] = spooled_cells(sp, daemon_up)
        for k in keys - set(wanted):
            t.remove_row(k)
        for k, cells in wanted.items():
            if k in keys:
                for col, v in zip(COLUMNS, cells, strict=True):
                    if t.get_cell(k, col) != v:
                        t.update_cell(k, col, v)
            else:
                t.add_row(*cells, key=k)
        note = "" if daemon_up else ("[yellow]daemon not running[/] — jobs shown from their folders; "
                                     "start it with [b]wanlora daemon start[/]")
        if not wanted:
            note = "No jobs yet. Press [b]n[/] for the wizard." + (f"\n{note}" if note else "")
        self.query_one("#dash-note", Static).update(note)
        if self.is_attached:
            app: Any = self.app
            self.set_timer(app.poll_s * LIST_POLL_FACTOR, self._poll)

    @on(DataTable.RowSelected, "#jobs")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        from wanlora.tui.screens.job import JobScreen

        jid = self.selected_job_id()
        app: Any = self.app
        if jid is None:
            return
        if not (app.home / "jobs" / jid).is_dir():
            self.notify(f"Job {jid} has no folder yet (still queued).")
            return
        app.push_screen(JobScreen(jid))

    class NewJob(Message):
        """n: the user wants the wizard (the app opens it on top of the list)."""

    def action_new(self) -> None:
        self.post_message(self.NewJob())
