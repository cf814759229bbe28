"""The job view of a completed job shows its Hub upload ([save] push_to_hub, issue #27): where it went, or why
it failed and the fix, read from ``<home>/push/<id>.json`` while the daemon is down."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static
from wanlora.daemon.hub_push import PushState, state_path
from wanlora.engine.config import jobdir
from wanlora.tui.app import WanloraApp

from tests.tui.jobs import T0, write_job


def _push_file(home: Path, job_id: int, **kw: object) -> None:
    st = PushState(job_id=job_id, name="orbit_v1", repo="me/orbit-v1", private=True, job_dir="", output_dir="",
                   **kw)  # type: ignore[arg-type]
    state_path(home, job_id).parent.mkdir(parents=True, exist_ok=True)
    jobdir.write_json_atomic(state_path(home, job_id), st.to_dict())


async def _files_text(home: Path, job_id: str) -> str:
    app = WanloraApp(home=home, gpus=[], clock=lambda: T0, watch_terminal=False, poll_s=0.1, start="attach",
                     job_id=job_id)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        return str(app.screen.query_one("#job-files", Static).render())


async def test_completed_job_view_shows_the_hub_url_or_the_failure_and_its_fix(home: Path) -> None:
    write_job(home, "3", name="orbit_v1", steps_done=20, total=20, state="completed")
    _push_file(home, 3, state="done", url="https://huggingface.co/me/orbit-v1", attempt=1,
               files=["orbit_v1_high_noise.safetensors", "orbit_v1_low_noise.safetensors", "README.md"])
    text = await _files_text(home, "3")
    assert "Hub: done: https://huggingface.co/me/orbit-v1 (private, 3 files)" in text

    write_job(home, "4", name="orbit_v1", steps_done=20, total=20, state="completed")
    _push_file(home, 4, state="failed", attempt=5, max_attempts=5,
               reason="gave up after 5 attempts: ConnectError: [Errno 111] Connection refused",
               fix="check this machine's network; then `wanlora push 4` tries again")
    text = " ".join((await _files_text(home, "4")).split())
    assert "Hub: failed: me/orbit-v1: gave up after 5 attempts: ConnectError: [Errno 111] Connection refused" in text
    assert "fix: check this machine's network; then `wanlora push 4` tries again" in text

    write_job(home, "5", name="orbit_v1", steps_done=20, total=20, state="completed")
    assert "Hub:" not in await _files_text(home, "5")  # no upload asked for: nothing said
