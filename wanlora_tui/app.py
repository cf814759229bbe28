"""The wanlora Textual app: the wizard (new job) and the dashboard (attach to jobs) in one program.

The app owns the long-lived things — the wizard state, the home folder, GPU detection, the clock — and the
order of the wizard's steps; screens ask it for "next"/"back".  Everything the tests need to make it
deterministic (GPU list, clock, home) is a constructor argument.  Over SSH: keyboard only, works at 80×24
in 256 colours, and exits by itself when its terminal goes away (SIGHUP, or stdin no longer a terminal).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from wanlora.engine.config.paths import wanlora_home
from wanlora.engine.config.schema import PANELS
from wanlora.tui.wizard_state import WizardState

Start = Literal["home", "wizard", "attach", "dashboard"]
STEP_TITLES = {"recipe": "RECIPE", "gpu": "GPU", "scan": "DATASET SCAN", "review": "REVIEW", **dict(PANELS)}
ORPHAN_CHECK_S = 5.0
DRAFT = "wizard-draft.toml"


def _tomlable(value: Any) -> Any:
    """The user's answers without the ``None``s TOML cannot hold."""
    if isinstance(value, dict):
        return {str(k): _tomlable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_tomlable(v) for v in value if v is not None]
    return value


def terminal_alive(fd: int = 0) -> bool:
    """False once the controlling terminal is gone (SSH dropped, tmux pane killed)."""
    import termios

    try:
        if not os.isatty(fd):
            return False
        termios.tcgetattr(fd)
    except (OSError, termios.error):
        return False
    return True


class WanloraApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "wanlora"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True, show=False)]  # the wizard asks first

    def __init__(
        self,
        *,
        home: Path | None = None,
        start: Start = "home",
        recipe: str | None = None,
        from_file: Path | None = None,
        job_id: str | None = None,
        gpus: list[Any] | None = None,
        clock: Callable[[], float] = time.time,
        poll_s: float = 1.0,
        watch_terminal: bool = True,
        save_to: Path | None = None,
    ) -> None:
        super().__init__()
        self.home = Path(home) if home is not None else wanlora_home()
        self.start_mode: Start = start
        self.job_id = job_id
        self.gpu_cache: list[Any] | None = list(gpus) if gpus is not None else None
        self.clock = clock
        self.poll_s = poll_s
        self.watch_terminal = watch_terminal
        self.wizard = self._initial_state(recipe, from_file)
        self.skip_recipe = recipe is not None or from_file is not None
        self.wizard_over_dashboard = False  # back on the first step returns to the job list
        self.save_to = Path(save_to) if save_to is not None else None  # `wanlora edit --wizard`: write, not submit

    def _initial_state(self, recipe: str | None, from_file: Path | None) -> WizardState:
        if from_file is not None:
            from wanlora.engine.config.io import read_toml

            st = WizardState.from_user_dict(read_toml(Path(from_file)))
        else:
            st = WizardState(recipe=recipe or "motion")
        if self.gpu_cache is not None:
            st.gpus = list(self.gpu_cache)
        return st

    # ---- start-up -----------------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.watch_terminal and not self.is_headless:
            self._install_orphan_guard()
        mode = self.start_mode
        if mode == "home":
            mode = "dashboard" if self.has_jobs() else "wizard"
        if mode == "wizard":
            self.start_wizard()
        elif mode == "attach":
            self.open_attach(self.job_id)
        else:
            self.open_dashboard()

    def has_jobs(self) -> bool:
        jobs = self.home / "jobs"
        spool_new = self.home / "spool" / "new"
        return (jobs.is_dir() and any(p.is_dir() for p in jobs.iterdir())) or (
            spool_new.is_dir() and any(spool_new.glob("*.toml")))

    def detect_gpus(self) -> list[Any]:
        """NVML via engine.config.gpu (called from a worker thread); tests pass ``gpus=`` instead."""
        if self.gpu_cache is not None:
            return self.gpu_cache
        from wanlora.engine.config.gpu import detect_gpus

        return detect_gpus()

    # ---- wizard flow --------------------------------------------------------------------------------
    @property
    def steps(self) -> list[str]:
        return ["recipe", "gpu", *(name for name, _ in PANELS), "scan", "review"]

    def wizard_title(self, step: str) -> str:
        st = self.wizard
        steps = self.steps
        i = steps.index(step) + 1 if step in steps else 0
        tier = f"{st.tier} GB tier" if isinstance(st.tier, int) else "tier: auto"
        return f"wanlora · new {st.recipe} LoRA · {tier} · {i}/{len(steps)} {STEP_TITLES.get(step, step.upper())}"

    def make_step(self, step: str) -> Screen[Any]:
        from wanlora.tui.screens.dataset_scan import DatasetScanScreen
        from wanlora.tui.screens.datasets import DatasetsScreen
        from wanlora.tui.screens.gpu import GpuScreen
        from wanlora.tui.screens.panel import PanelScreen
        from wanlora.tui.screens.recipe import RecipeScreen
        from wanlora.tui.screens.review import ReviewScreen

        if step == "recipe":
            return RecipeScreen()
        if step == "gpu":
            return GpuScreen()
        if step == "datasets":
            return DatasetsScreen()
        if step == "model":
            from wanlora.tui.screens.model_panel import ModelPanelScreen

            return ModelPanelScreen(dict(PANELS)[step])
        if step == "scan":
            return DatasetScanScreen()
        if step == "review":
            return ReviewScreen()
        return PanelScreen(step, dict(PANELS)[step])

    def start_wizard(self) -> None:
        self.push_screen(self.make_step("recipe"))
        if self.skip_recipe:
            self.push_screen(self.make_step("gpu"))

    # ---- messages from the screens (screens never import the app) ---------------------------------------
    def on_wizard_screen_advance(self, message: Any) -> None:
        message.stop()
        self.save_draft()
        self.wizard_next(message.step)

    def on_wizard_screen_retreat(self, message: Any) -> None:
        message.stop()
        self.save_draft()
        self.wizard_back(message.step)

    def on_wizard_screen_quit_requested(self, message: Any) -> None:
        message.stop()
        self.confirm_quit()

    def on_dashboard_screen_new_job(self, message: Any) -> None:
        message.stop()
        self.open_new_wizard()

    async def action_quit(self) -> None:
        """ctrl+q: leaving the wizard asks first (its answers are kept as a draft); elsewhere it just quits."""
        from wanlora.tui.screens.wizard_base import WizardScreen

        if isinstance(self.screen, WizardScreen):
            self.confirm_quit()
        else:
            self.exit()

    @work(exclusive=True, group="quit")
    async def confirm_quit(self) -> None:
        from wanlora.tui.screens.confirm import ConfirmScreen

        where = self.save_draft()
        keep = (f"Your answers are kept as a draft:\n{where}\n`wanlora new --draft` continues from it."
                if where else "Nothing was entered yet.")
        if await self.push_screen_wait(ConfirmScreen(f"Quit the wizard?\n{keep}", yes="Quit", no="Keep editing")):
            self.exit()

    # ---- the draft: what the wizard has so far, kept on disk --------------------------------------------
    @property
    def draft_path(self) -> Path:
        return self.home / DRAFT

    def save_draft(self) -> Path | None:
        """Write the user's answers (a sparse job file) so quitting or a dropped SSH session loses nothing."""
        if self.save_to is not None:  # `wanlora edit --wizard` edits a file of its own
            return None
        user = _tomlable(self.wizard.user)
        if not any(k != "job" for k in user) and set(user.get("job", {})) <= {"preset", "vram_tier"}:
            return None  # nothing typed yet
        try:
            import tomli_w
            from wanlora.engine.config.jobdir import write_text_atomic

            self.draft_path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.draft_path, "# wanlora wizard draft: `wanlora new --draft` continues it\n"
                              + tomli_w.dumps(user))
        except (OSError, TypeError, ValueError):
            return None
        return self.draft_path

    def drop_draft(self) -> None:
        try:
            self.draft_path.unlink()
        except OSError:
            pass

    def wizard_next(self, step: str) -> None:
        if step == "review":
            self.submit_job()
            return
        steps = self.steps
        self.push_screen(self.make_step(steps[steps.index(step) + 1]))

    def wizard_back(self, step: str) -> None:
        if step == "recipe" and self.wizard_over_dashboard:
            self.wizard_over_dashboard = False
            self.pop_screen()
            return
        if step == "recipe" or len(self.screen_stack) <= 2:
            self.notify("This is the first step (ctrl+q quits).", timeout=2)
            return
        self.pop_screen()

    @work(exclusive=True, group="submit")
    async def submit_job(self) -> None:
        """Drop the reviewed TOML into the spool; offer to start the daemon when it is not running."""
        import asyncio

        from wanlora.tui import daemon_link
        from wanlora.tui.screens.confirm import ConfirmScreen

        text = self.wizard.toml()
        if self.save_to is not None:
            self.save_to.write_text(text, encoding="utf-8")
            self.exit(0)
            return
        if not await asyncio.to_thread(daemon_link.daemon_running, self.home):
            start = await self.push_screen_wait(ConfirmScreen(
                "The wanlora daemon is not running, so nothing will train yet.\n"
                "Start it now? It runs in the background and keeps training after you log out.",
                yes="Start daemon", no="Only queue"))
            if start:
                ok, msg = await asyncio.to_thread(daemon_link.start_daemon, self.home)
                self.notify(msg, severity="information" if ok else "error", timeout=6)
        try:
            name = self.wizard.job.job.name if self.wizard.job else None
            where = await asyncio.to_thread(daemon_link.submit, self.home, text, name)
        except Exception as e:  # disk full, permissions: say so and stay on the review
            self.notify(f"Could not submit: {e}", severity="error", timeout=10)
            return
        self.drop_draft()
        self.notify(f"Submitted {self.wizard.job.job.name if self.wizard.job else ''}: {where}", timeout=6)
        await self._reset_to(self._dashboard_screen())

    # ---- dashboard ----------------------------------------------------------------------------------
    def _dashboard_screen(self) -> Screen[Any]:
        from wanlora.tui.screens.dashboard import DashboardScreen

        return DashboardScreen()

    def open_dashboard(self) -> None:
        self.push_screen(self._dashboard_screen())

    def open_attach(self, job_id: str | None) -> None:
        from wanlora.tui.job_model import list_jobs
        from wanlora.tui.screens.job import JobScreen

        self.push_screen(self._dashboard_screen())
        if job_id is None:  # the running job (newest of them), else the newest job
            jobs = [j for j in list_jobs(self.home, now=self.clock()) if j.dir is not None]
            active = [j for j in jobs if j.state in ("running", "starting", "loading")]
            pick = (active or jobs)[-1:] if jobs else []
            job_id = pick[0].id if pick else None
        if job_id is not None:
            if not (self.home / "jobs" / job_id).is_dir():
                self.notify(f"No job {job_id} in {self.home / 'jobs'}", severity="error")
                return
            self.push_screen(JobScreen(job_id))

    def open_new_wizard(self) -> None:
        """From the dashboard: a fresh wizard on top (back to the dashboard when done or cancelled)."""
        self.wizard = WizardState(recipe="motion", gpus=list(self.gpu_cache or []))
        self.skip_recipe = False
        self.wizard_over_dashboard = True
        self.start_wizard()

    async def _reset_to(self, screen: Screen[Any]) -> None:
        self.wizard_over_dashboard = False
        while len(self.screen_stack) > 1:
            await self.pop_screen()
        await self.push_screen(screen)

    # ---- an orphaned TUI exits ----------------------------------------------------------------------
    def _install_orphan_guard(self) -> None:
        if threading.current_thread() is threading.main_thread():
            try:
                signal.signal(signal.SIGHUP, self._on_hangup)
            except (ValueError, OSError):
                pass
        self.set_interval(ORPHAN_CHECK_S, self._check_terminal)

    def _on_hangup(self, signum: int, frame: Any) -> None:
        self._orphaned()

    def _check_terminal(self) -> None:
        if not (terminal_alive(0) and terminal_alive(sys.__stdout__.fileno() if sys.__stdout__ else 1)):
            self._orphaned()

    def _orphaned(self) -> None:
        """The terminal is gone: leave now (the job keeps running under the daemon)."""
        def hard_exit() -> None:  # restoring a dead terminal can block; never outlive it by long
            time.sleep(2.0)
            if self.is_running:
                os._exit(129)

        threading.Thread(target=hard_exit, daemon=True).start()
        try:
            self.save_draft()
        except Exception:
            pass
        try:
            self.call_later(self.exit, 129, 129)
        except Exception:
            os._exit(129)
