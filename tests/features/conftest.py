"""Fixtures for the feature tests: the engine tests' tiny model and clips, plus a trainer runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.engine.conftest import clips, tiny_model, tiny_pipe  # noqa: F401  (shared session fixtures)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the real wanlora home (read-only fallback caches land there)."""
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class VaeCounter:
    """Counts ``vae.encode`` calls (work done, not time)."""

    def __init__(self, vae) -> None:
        self.calls = 0
        self._orig = vae.encode

        def encode(*a, **k):
            self.calls += 1
            return self._orig(*a, **k)

        vae.encode = encode
