"""An orphaned TUI (its terminal gone after an SSH drop) exits instead of spinning on a dead tty."""

from __future__ import annotations

import os
import pty
from pathlib import Path

import pytest
import wanlora.tui.app as app_mod
from wanlora.tui.app import WanloraApp, terminal_alive


def test_terminal_alive_sees_a_hangup() -> None:
    master, slave = pty.openpty()
    try:
        assert terminal_alive(slave)
        os.close(master)  # the SSH connection / tmux pane goes away
        assert not terminal_alive(slave)
    finally:
        os.close(slave)


async def test_app_exits_when_its_terminal_is_gone(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = WanloraApp(home=home, start="wizard", recipe="motion", gpus=[], watch_terminal=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        assert app.is_running
        monkeypatch.setattr(app_mod, "terminal_alive", lambda fd=0: False)
        app._check_terminal()  # what the 5-second timer does
        for _ in range(30):
            await pilot.pause(0.05)
            if not app.is_running:
                break
    assert app.return_code == 129
