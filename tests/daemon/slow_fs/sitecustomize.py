"""A dataset folder on a slow disk, for the daemon tests: put this folder on PYTHONPATH and set
``WANLORA_TEST_SLOW_DIRS`` to ``{"<folder>": seconds}`` (JSON); every listing of such a folder, in every Python
process started with that environment (the daemon and its checker processes), then takes that long."""

from __future__ import annotations

import json
import os
import time

_SLOW = json.loads(os.environ.get("WANLORA_TEST_SLOW_DIRS") or "{}")

if _SLOW:
    _listdir, _scandir = os.listdir, os.scandir

    def _stall(path: object) -> None:
        p = os.fspath(path) if isinstance(path, str | bytes | os.PathLike) else "."
        p = os.path.abspath(p.decode() if isinstance(p, bytes) else p)
        for folder, seconds in _SLOW.items():
            if p == folder or p.startswith(folder + os.sep):
                time.sleep(float(seconds))

    def listdir(path=".") -> list:  # noqa: ANN001
        _stall(path)
        return _listdir(path)

    def scandir(path="."):  # noqa: ANN001, ANN201
        if not isinstance(path, int):
            _stall(path)
        return _scandir(path)

    os.listdir = listdir
    os.scandir = scandir
