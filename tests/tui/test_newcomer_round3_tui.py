"""Issue #27 item 10 (Pilot, 80×24): a line too long for its place ends in "…" instead of being cut mid-word —
the wizard's status line (the scan panel's footer) and the daemon's lines in the job view's log tail."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static
from wanlora.engine.config import jobdir
from wanlora.tui.widgets.log_tail import LogTail

from tests.tui.jobs import write_job
from tests.tui.test_newcomer_tui import SIZE, _app, _text, _to, _wizard


async def test_the_scan_panels_status_line_ends_in_an_ellipsis(home: Path, tmp_path: Path) -> None:
    app = _wizard(home)
    long_folder = "/workspace/" + "/".join(["a_rather_long_folder_name"] * 6) + "/clips"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.screen.state.set("datasets[0].folder", long_folder)
        await _to(pilot, "scan")
        await pilot.pause(0.3)
        first = app.screen.state.errors[0]
        assert len(first.message) > 80  # the message does not fit one line
        line = app.screen.query_one("#wiz-status", Static)
        shown = _text(line)
        assert shown.endswith("…") and len(shown) <= SIZE[0] - 2, shown  # padding 1 on each side


async def test_the_job_views_log_lines_end_in_an_ellipsis(home: Path) -> None:
    d = write_job(home, "5", name="orbit", steps_done=60, total=60, state="completed", log_lines=2)
    long = ("[wanlora daemon 2026-12-07 19:41:57] queued from spool file "
            "'job-20261207-194157-e225c1cc468f4f76b25bf356c4328082.toml' (submission e225c1cc468f4f76b25bf356c4328082)")
    with open(d / jobdir.TRAIN_LOG, "a") as f:
        f.write(long + "\n[wanlora daemon 2026-12-07 19:42:06] completed\n")
    app = _app(home, start="attach", job_id="5")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
        log = app.screen.query_one("#job-log", LogTail)
        width = log.scrollable_content_region.width
        rows = [log.render_line(y).text for y in range(log.scrollable_content_region.height)]
        cut = [r for r in rows if r.startswith("[wanlora daemon") and "queued from" in r]
        assert cut and cut[0].endswith("…") and len(cut[0]) == width, (width, rows)
        assert any(r.rstrip() == "[wanlora daemon 2026-12-07 19:42:06] completed" for r in rows), rows
