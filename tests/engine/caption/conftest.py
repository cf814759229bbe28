"""Fixtures for the caption tests: a tiny random Qwen2.5-VL built offline once, and real uncaptioned clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon.conftest import daemons, home  # noqa: F401  (real daemons on private homes)
from tests.tui.conftest import pytest_pyfunc_call  # noqa: F401  (async Pilot tests run with asyncio.run)


@pytest.fixture(scope="session")
def tiny_vl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Qwen2_5_VLForConditionalGeneration folder (random weights, word-level tokenizer), no download."""
    from wanlora.engine.caption.tiny import build_tiny_captioner

    return build_tiny_captioner(tmp_path_factory.mktemp("captioner") / "tiny-qwen2.5-vl")


def uncaptioned(folder: Path, n: int = 3, **kw) -> Path:  # noqa: ANN003 - write_clips options
    """``n`` real 64×64 H.264 clips without caption files."""
    from wanlora.engine.data.synthetic import write_clips

    write_clips(folder, n=n, num_frames=kw.pop("num_frames", 24), size=(64, 64), captions=False, **kw)
    return folder
