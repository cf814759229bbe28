"""Suite-wide defaults.

Job files in the tests ask for fp8/nf4 tiers whatever machine runs the suite; whether *this* machine could
run them (``engine.config.machine``) is tested on its own with explicit machines
(tests/engine/config/test_machine.py), so the rest of the suite validates as if on any machine.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _validate_for_any_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANLORA_VALIDATE_ANYWHERE", "1")
