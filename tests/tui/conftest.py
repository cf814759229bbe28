"""Shared fixtures for the TUI tests: a private home, fixed GPU info, small real clips, screen text."""

from __future__ import annotations

import asyncio
import inspect
import io
from pathlib import Path

import pytest
from rich.console import Console
from wanlora.engine.config.gpu import GpuInfo

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", 79.6, 79.1)
FIXED_NOW = 1_750_000_000.0  # snapshot tests: a fixed clock


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests here with asyncio.run (no async plugin needed for Pilot tests)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {a: pyfuncitem.funcargs[a] for a in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("WANLORA_HOME", str(h))
    monkeypatch.chdir(tmp_path)
    return h


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small real H.264 clips with captions (the data engineer's synthetic writer)."""
    from wanlora.engine.data.synthetic import write_clips

    folder = tmp_path_factory.mktemp("clips")
    write_clips(folder, n=3, num_frames=24, size=(64, 64), caption="orbit 360 around the subject")
    return folder


def screen_text(app) -> str:  # noqa: ANN001 - any running App
    """What the terminal shows now, as plain text (to assert on what a user would read)."""
    w, h = app.size
    console = Console(width=w, height=h, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def field_id(key: str) -> str:
    return "#f-" + key.replace(".", "-").replace("[", "-").replace("]", "")
