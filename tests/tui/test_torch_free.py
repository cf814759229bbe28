"""The TUI never imports torch: it starts fast on a login node and talks to the daemon and the job files."""

from __future__ import annotations

import subprocess
import sys


def test_tui_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "import wanlora.tui.app, wanlora.tui.daemon_link, wanlora.tui.job_model\n"
        "from wanlora.tui.screens import confirm, dashboard, dataset_scan, datasets, gpu, job, panel, recipe, review\n"
        "from wanlora.tui.commands import home, new, attach\n"
        "import wanlora.engine.data.scan, wanlora.engine.estimate, wanlora.engine.checks.validate, wanlora.engine.config.presets\n"
        "import wanlora.engine.checks.caption_job\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers', 'peft'))\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
