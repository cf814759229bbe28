"""The wizard's MODEL panel lists the Wan 2.2 weights found on this machine and fills the file keys with one key
press — the same list as ``wanlora model find`` (headers only, torch-free)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from textual.widgets import Button
from wanlora.engine.model.weight_files import expected_transformer_shapes
from wanlora.tui.app import WanloraApp
from wanlora.tui.screens.model_panel import ModelPanelScreen

from tests.tui.conftest import H100, screen_text
from tests.tui.test_wizard import SIZE, next_step

SMALL = dict(patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=8, in_channels=36, out_channels=16,
             text_dim=16, freq_dim=32, ffn_dim=32, num_layers=1, cross_attn_norm=True)


def _folder(tmp: Path) -> Path:
    """A diffusers config folder (configs only) of a small Wan 2.2 I2V, and ComfyUI-named expert files for it."""
    root = tmp / "small-wan"
    for sub in ("transformer", "transformer_2"):
        (root / sub).mkdir(parents=True)
        (root / sub / "config.json").write_text(json.dumps({"_class_name": "WanTransformer3DModel", **SMALL}))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.9}))
    models = tmp / "ComfyUI" / "models" / "diffusion_models"
    models.mkdir(parents=True)
    for side in ("high_noise", "low_noise"):
        tensors = {f"model.diffusion_model.{k}": np.zeros(s, np.float16) for k, s in expected_transformer_shapes(SMALL).items()}
        save_file(tensors, str(models / f"wan2.2_i2v_{side}_14B_fp16.safetensors"))
    return root


async def test_model_panel_offers_the_files_found(home: Path, tmp_path: Path, monkeypatch) -> None:
    root = _folder(tmp_path)
    monkeypatch.setattr(ModelPanelScreen, "search_dirs", [tmp_path / "ComfyUI"])
    app = WanloraApp(home=home, start="wizard", recipe="motion", gpus=[H100], watch_terminal=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        await next_step(pilot, "job")
        app.wizard.set("model.name_or_path", str(root))
        await next_step(pilot, "model")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.1)
        text = screen_text(app)
        assert "Found on this machine" in text and "wan2.2_i2v_high_noise_14B_fp16.safetensors" in text, text
        button = app.screen.query_one("#use-found", Button)
        assert button.display
        button.focus()
        await pilot.press("enter")
        await pilot.pause(0.1)
        m = app.wizard.job.model
        assert m.high_noise_file.endswith("wan2.2_i2v_high_noise_14B_fp16.safetensors")
        assert m.low_noise_file.endswith("wan2.2_i2v_low_noise_14B_fp16.safetensors")
        assert app.wizard.origin("model.high_noise_file") == "user"
        assert not [f for f in app.wizard.findings if f.key.startswith("model.") and f.level == "error"]


def test_model_panel_and_find_import_no_torch() -> None:
    code = ("import sys\nimport wanlora.tui.screens.model_panel, wanlora.engine.model.find, wanlora.engine.model.pull\n"
            "import wanlora.tui.commands.model\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers', 'peft'))\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
