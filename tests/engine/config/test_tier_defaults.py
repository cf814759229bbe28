"""Every recipe on every VRAM tier, written as a user writes it (preset + tier + folder): the plan it resolves to.

Issue #25: the fast settings must be the defaults, not flags a user has to know.  These tests pin what each
recipe × tier resolves to (caching, placement, quantisation), that ``--vram-gib`` re-resolves
``vram_tier = "auto"`` for that card, and that a low_vram switch never holds two experts on the GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from wanlora.engine.config.presets import resolve
from wanlora.engine.estimate import CARD_GIB, peak_vram
from wanlora.engine.train.experts import swap_moves

RECIPES = ("motion", "style", "character")
TIERS = (12, 24, 32, 48, 80, 141)
# what each tier's card must run: (quantisation, only the active expert on the GPU, layer offloading)
PLACEMENT = {12: ("nf4", True, True), 24: ("nf4", True, False), 32: ("nf4", True, False),
             48: ("nf4", False, False), 80: ("fp8", False, False), 141: ("fp8", False, False)}


def as_user_writes_it(recipe: str, tier: int | str) -> dict:
    job = {"preset": recipe, "vram_tier": tier}
    if recipe in ("style", "character"):
        job["trigger_word"] = "wnlr"
    return {"job": job, "datasets": [{"folder": "/clips"}]}


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_on_each_tier_resolves_to_the_fast_plan_that_fits(recipe, tier):
    r = resolve(as_user_writes_it(recipe, tier))
    job, o = r.job, r.origins
    # caching on by default: the text encoder and the VAE leave the GPU while the experts train
    assert job.training.cache_text_embeddings and o["training.cache_text_embeddings"] == "default"
    assert job.datasets[0].cache_latents and o["datasets[0].cache_latents"] == "default"
    assert not job.training.unload_text_encoder  # captions keep training (the guide's 24 GB trick is opt-in)
    quant, low_vram, offload = PLACEMENT[tier]
    assert (job.quantization.transformer, job.model.low_vram, job.model.layer_offloading) == (quant, low_vram, offload)
    assert o["quantization.transformer"] == "tier" and job.quantization.text_encoder == "fp8"
    assert job.advanced.compile and job.advanced.attention_backend == "auto"  # FA4 where installed
    # an expert that is swapped in trains 10+ steps before the next swap (each switch moves 8-14 GiB)
    assert not low_vram or job.multistage.switch_every >= 10
    assert job.training.dop.enabled == (recipe != "motion")
    # and the plan fits the tier's card by the estimate the wizard shows
    mem = peak_vram(job, CARD_GIB[tier])
    assert mem.need_gib <= CARD_GIB[tier], (recipe, tier, mem.parts)


def test_the_guide_run_fits_the_80_and_141_cards_in_fp8():
    for tier in (80, 141):
        user = as_user_writes_it("motion", tier)
        user["datasets"][0]["resolutions"] = [512, 768, 1024]
        job = resolve(user).job
        mem = peak_vram(job, CARD_GIB[tier])
        assert job.quantization.transformer == "fp8" and mem.need_gib <= CARD_GIB[tier]
        assert mem.plan is not None  # the figure comes from the trainer's plan for that card


def test_a_low_vram_switch_never_holds_two_experts_on_the_gpu():
    """Simulate every switch of a two-expert low_vram run: idle experts leave before the active one comes in."""
    on = {"high_noise": False, "low_noise": False}
    for active in ("high_noise", "low_noise", "high_noise", None, "low_noise"):
        for name, to_gpu in swap_moves(on, active):
            on[name] = to_gpu
            assert sum(on.values()) <= 1, f"two experts on the GPU while switching to {active}"
        assert [n for n, v in on.items() if v] == ([] if active is None else [active])
    assert swap_moves({"high_noise": True, "low_noise": False}, "high_noise") == []  # already placed: no move


def _estimate_json(path, *args) -> dict:
    out = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "estimate", str(path), "--json", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_vram_gib_resolves_auto_for_that_card(tmp_path):
    import tomli_w

    job = tmp_path / "job.toml"
    job.write_text(tomli_w.dumps(as_user_writes_it("motion", "auto")))
    small = _estimate_json(job, "--vram-gib", "24")
    big = _estimate_json(job, "--vram-gib", "80")
    assert small["tier"] == 24 and big["tier"] == 80
    assert small["budget_gib"] == 24 and small["need_gib"] <= 24
    # the trial resolves the same way, and its report names the tier it used
    from wanlora.tui.commands._job_arg import load_job_arg
    from wanlora.tui.commands.trial import _tier_used

    resolved = load_job_arg(str(job), vram_gib=24)
    assert (resolved.quantization.transformer, resolved.model.low_vram) == ("nf4", True)
    assert _tier_used(resolved, 24).startswith("24 (auto, for --vram-gib 24)")
