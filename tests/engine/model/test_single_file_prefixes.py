"""Expert files carry their keys under any of the prefixes users' tools write (none, ``model.``,
``diffusion_model.``, ``model.diffusion_model.``): each one loads, and ``model find`` / ``validate`` say so
only when the loader agrees (one function decides the prefix)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from wanlora.engine.model import single_file as sf
from wanlora.engine.model import weight_files as wf
from wanlora.engine.model.folder import load_expert

CPU = torch.device("cpu")
PREFIXES = ("", "model.", "diffusion_model.", "model.diffusion_model.")


def _write(state: dict[str, torch.Tensor], path: Path, *, layout: str, prefix: str, precision: str = "fp32") -> Path:
    """The expert with every key under ``prefix``: original Wan names (``layout="wan"``) or diffusers names."""
    plain = sf.expert_file_tensors(state, layout=layout, precision=precision)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v for k, v in plain.items()}, str(path))
    return path


@pytest.mark.parametrize("layout", ["wan", "diffusers"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_prefix_is_identified_checked_and_loaded_alike(tmp_path: Path, tiny_model: Path, prefix: str,
                                                             layout: str) -> None:
    from wanlora.engine.model.find import find_parts

    state = load_expert(tiny_model, wf.HIGH, torch.float32, CPU).state_dict()
    path = _write(state, tmp_path / "models/diffusion_models/wan2.2_i2v_high_noise_14B_fp32.safetensors",
                  layout=layout, prefix=prefix)
    rep = wf.identify(path)
    assert rep.kind == "expert" and rep.facts["prefix"] == prefix
    errors, _warnings, _ = wf.check_files({wf.HIGH: path}, tiny_model)  # what validate and the trainer check
    assert errors == []
    found = find_parts([tmp_path / "models"], tiny_model)
    assert [c.path for c in found.for_part(wf.HIGH)] == [path]
    model = sf.load_expert_file(path, wf.config_for(wf.HIGH, tiny_model), dtype=torch.float32, device=CPU)
    got = model.state_dict()
    assert got.keys() == state.keys()
    assert all(torch.equal(got[k], state[k]) for k in state)  # fp32 in, fp32 out: the same bytes


@pytest.mark.parametrize("prefix", ["diffusion_model.", "model."])
def test_an_fp8_scaled_file_under_another_prefix_dequantises_with_its_own_scales(tmp_path: Path, tiny_model: Path,
                                                                                prefix: str) -> None:
    """The scales are found under the same prefix as their weights (w = q · scale, computed here by hand)."""
    state = load_expert(tiny_model, wf.HIGH, torch.float32, CPU).state_dict()
    path = _write(state, tmp_path / "hi_fp8.safetensors", layout="wan", prefix=prefix, precision="fp8_scaled")
    assert wf.identify(path).precision == "fp8_scaled"
    raw = {k[len(prefix):]: v for k, v in load_file(str(path)).items()}
    by_hand = {}
    for k, v in raw.items():
        if k.endswith((".scale_weight", "scaled_fp8")):
            continue
        scale = raw.get(k.removesuffix(".weight") + ".scale_weight")
        by_hand[k] = v.float() * scale if scale is not None else v.float()
    got = sf.load_expert_file(path, wf.config_for(wf.HIGH, tiny_model), dtype=torch.float32, device=CPU).state_dict()
    from wanlora.engine.model import keymaps

    for diff_key, tensor in got.items():
        want = by_hand[keymaps.diffusers_to_wan_transformer(diff_key)]
        assert torch.equal(tensor, want), diff_key  # one fp32 multiply each side: exact


def test_the_prefix_is_decided_in_one_place() -> None:
    """identify (model find, validate) and the loader both ask ``transformer_prefix``; longest match wins."""
    assert wf.transformer_prefix({"model.diffusion_model.patch_embedding.weight"}) == "model.diffusion_model."
    assert wf.transformer_prefix({"diffusion_model.patch_embedding.weight"}) == "diffusion_model."
    assert wf.transformer_prefix({"model.patch_embedding.weight"}) == "model."
    assert wf.transformer_prefix({"patch_embedding.weight"}) == ""
    assert wf.transformer_prefix({"unet.patch_embedding.weight"}) is None
