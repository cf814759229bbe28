"""Pure schedule pieces: expert alternation, learning rate, OOM ladder, state folders."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from wanlora.engine.config.io import job_from_dict
from wanlora.engine.train.experts import expert_for_step, steps_per_expert, trained_experts
from wanlora.engine.train.failures import oom_ladder, oom_message
from wanlora.engine.train.optim import OptimizerUnavailable, build_optimizer, lr_at  # noqa: I001
from wanlora.engine.train.state import latest_state, list_states, load_state, save_state


def test_experts_alternate_in_blocks_starting_high() -> None:
    both = trained_experts(True, True)
    assert both == ["high_noise", "low_noise"]
    seq = [expert_for_step(s, both, 3)[0] for s in range(12)]
    assert "".join(seq) == "hhhlllhhhlll"
    assert {expert_for_step(s, ["low_noise"], 10) for s in range(50)} == {"low_noise"}
    assert "".join(expert_for_step(s, both, 1)[0] for s in range(4)) == "hlhl"
    assert steps_per_expert(25, both, 10) == {"high_noise": 15, "low_noise": 10}
    assert steps_per_expert(7, ["high_noise"], 10) == {"high_noise": 7}
    with pytest.raises(ValueError):
        trained_experts(False, False)


def test_lr_schedules() -> None:
    assert lr_at(0, 1e-4, 100) == 1e-4 and lr_at(99, 1e-4, 100) == 1e-4
    assert lr_at(0, 1.0, 100, warmup_steps=4) == 0.25 and lr_at(3, 1.0, 100, warmup_steps=4) == 1.0
    assert lr_at(4, 1.0, 104, 4, "cosine") == 1.0
    assert math.isclose(lr_at(54, 1.0, 104, 4, "cosine"), 0.5)
    assert math.isclose(lr_at(54, 1.0, 104, 4, "linear"), 0.5)
    assert lr_at(104, 1.0, 104, 4, "linear") == 0.0
    with pytest.raises(ValueError):
        lr_at(5, 1.0, 10, 0, "step")


def test_adamw8bit_needs_cuda() -> None:
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer(p, "adamw", 1e-4, 0.0, torch.device("cpu")), torch.optim.AdamW)
    with pytest.raises(OptimizerUnavailable, match="CUDA"):
        build_optimizer(p, "adamw8bit", 1e-4, 0.0, torch.device("cpu"))


def test_oom_ladder_follows_the_guide_and_skips_rungs_already_taken() -> None:
    big = job_from_dict({"datasets": [{"folder": "/x", "resolutions": [512, 768, 1024], "num_frames": 81}],
                         "training": {"batch_size": 2}})
    ladder = oom_ladder(big)
    keys = [s.split(":")[0].split(" ")[0] for s in ladder]
    assert keys == ["datasets[0].resolutions", "datasets[0].num_frames", "training.batch_size", "model.low_vram",
                    "quantization.transformer", "model.layer_offloading"]
    assert "81 → 41" in ladder[1] and "[512, 768]" in ladder[0]
    small = job_from_dict({"datasets": [{"folder": "/x", "resolutions": [512], "num_frames": 21}],
                           "model": {"low_vram": True, "layer_offloading": True},
                           "quantization": {"transformer": "nf4"}})
    assert oom_ladder(small) == []
    assert "more memory" in oom_message(small)
    assert oom_message(big).startswith("CUDA ran out of memory. Try, in this order: 1) datasets[0].resolutions")


def test_state_saves_are_atomic_and_pruned(tmp_path: Path) -> None:
    def save(step: int) -> Path:
        return save_state(tmp_path, step, adapters={"high_noise": {"a": torch.full((2,), float(step))}},
                          optimizers={"high_noise": {"state": {}, "param_groups": []}},
                          rng={"python": None, "generators": {}}, meta={"data": {"next_batch": step}})

    assert latest_state(tmp_path) is None
    for s in (2, 4, 6):
        save(s)
    assert [s for s, _ in list_states(tmp_path)] == [4, 6]  # two newest kept
    (tmp_path / "state" / ".tmp_step_000008_1").mkdir()  # a save that died half-way is never picked
    (tmp_path / "state" / "step_000010").mkdir()  # a folder without meta.json is incomplete
    st = load_state(latest_state(tmp_path))
    assert st["meta"]["step"] == 6 and st["meta"]["data"] == {"next_batch": 6}
    assert torch.equal(st["adapters"]["high_noise"]["a"], torch.full((2,), 6.0))
