"""Helpers for the cache tests (the tiny model and clips come from tests/engine/conftest.py)."""

from __future__ import annotations


class VaeCounter:
    """Counts ``vae.encode`` calls (work done, not time)."""

    def __init__(self, vae) -> None:
        self.calls = 0
        self._orig = vae.encode

        def encode(*a, **k):
            self.calls += 1
            return self._orig(*a, **k)

        vae.encode = encode
