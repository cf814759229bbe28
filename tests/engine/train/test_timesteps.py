"""Timestep sampling: every draw lands in the active expert's range, whatever the type and bias."""

from __future__ import annotations

import itertools

import pytest
import torch
from wanlora.engine.train.timesteps import (
    expert_slice,
    sample_timesteps,
    shift_sigma,
    sigmas_from_timesteps,
    timestep_table,
)

TYPES = ("linear", "sigmoid", "shift")
BIASES = ("balanced", "high_noise", "low_noise")
EXPERTS = ("high_noise", "low_noise")


@pytest.mark.parametrize("kind,bias,expert,boundary", [
    (k, b, e, r) for k, b, e in itertools.product(TYPES, BIASES, EXPERTS) for r in (0.9, 0.875, 0.5)
])
def test_draws_never_leave_the_experts_range(kind: str, bias: str, expert: str, boundary: float) -> None:
    g = torch.Generator().manual_seed(1)
    t = torch.cat([sample_timesteps(64, expert, boundary, kind, bias, generator=g) for _ in range(40)])
    assert t.dtype == torch.float32 and t.numel() == 64 * 40
    if expert == "high_noise":
        assert t.min().item() >= boundary * 1000 and t.max().item() <= 1000
    else:
        assert t.max().item() < boundary * 1000 and t.min().item() >= 0.0
    assert t.unique().numel() > 5  # actually spread, not a constant


def test_tables_are_descending_and_match_the_formulas() -> None:
    lin = timestep_table("linear")
    assert lin[0] == 1000 and lin[-1] == 1 and lin.numel() == 1000
    sh = timestep_table("shift")
    assert torch.allclose(shift_sigma(torch.tensor([0.5])), torch.tensor([5 * 0.5 / 3]))
    sig = timestep_table("sigmoid", torch.Generator().manual_seed(0))
    for t in (lin, sh, sig):
        assert (t[:-1] >= t[1:]).all()
    assert 0 < sig.min() and sig.max() < 1000


def test_shift_table_is_ai_toolkits() -> None:
    """ai-toolkit's shift table, derived by hand (not from our code): its scheduler is
    FlowMatchEulerDiscreteScheduler(shift=5), whose sigma_min is S(1/1000) = 0.005/1.004 = 5/1004 with
    S(σ) = 5σ/(1+4σ); set_train_timesteps("shift") takes linspace(1, 5/1004, 1000) — i.e. σ_i = (1004 − i)/1004,
    since the step is (999/1004)/999 = 1/1004 — and shifts it again: t_i = 1000·S(σ_i) = 5000(1004 − i)/(5020 − 4i).
    """
    sh = timestep_table("shift").double()
    by_hand = torch.tensor([5000.0 * (1004 - i) / (5020 - 4 * i) for i in range(1000)], dtype=torch.float64)
    assert torch.allclose(sh, by_hand, rtol=0, atol=1e-4), (sh - by_hand).abs().max()
    # a few entries as numbers: 1000, 5000·504/3020 and 25000/1024 (the low end, where a single shift of
    # linspace(1, 1/1000) would give 4.98 — the 19.4 gap this table used to have)
    assert sh[0].item() == 1000.0
    assert abs(sh[500].item() - 834.4370860927) < 1e-4 and abs(sh[999].item() - 24.4140625) < 1e-4
    # and the same numbers from diffusers' scheduler the way ai-toolkit's sampler reads it
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0, use_dynamic_shifting=False)
    sig = torch.linspace(sched.sigma_max, sched.sigma_min, 1000, dtype=torch.float64)
    assert torch.allclose(sh, 1000 * 5 * sig / (1 + 4 * sig), rtol=0, atol=1e-3)
    # routing: 359 entries at t ≥ 900 go to the high-noise expert
    assert int((sh >= 900).sum()) == 359


def test_linear_expert_slices_split_at_the_boundary() -> None:
    lin = timestep_table("linear")
    lo, hi = expert_slice(lin, "high_noise", 0.9)
    assert (lo, hi) == (0, int((lin >= 900).sum()))
    assert expert_slice(lin, "low_noise", 0.9) == (hi, 1000)
    assert lin[hi - 1] >= 900 > lin[hi]


def test_bias_moves_the_mass_inside_the_range() -> None:
    def mean_t(bias: str) -> float:
        g = torch.Generator().manual_seed(3)
        return sample_timesteps(20000, "low_noise", 0.9, "linear", bias, generator=g).mean().item()

    bal, hi, lo = mean_t("balanced"), mean_t("high_noise"), mean_t("low_noise")
    assert hi > bal + 100 and lo < bal - 100  # u^3 piles at the high-t end, 1-u^3 at the low-t end
    assert abs(bal - (900 + 1) / 2) < 15  # uniform over [1, 900)


def test_shift_puts_more_of_the_low_expert_at_high_noise_than_linear() -> None:
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    lin = sample_timesteps(20000, "low_noise", 0.9, "linear", generator=g1).mean()
    sh = sample_timesteps(20000, "low_noise", 0.9, "shift", generator=g2).mean()
    assert sh > lin + 50


def test_same_generator_state_same_draws() -> None:
    a = sample_timesteps(8, "high_noise", 0.9, "sigmoid", "balanced", torch.Generator().manual_seed(7))
    b = sample_timesteps(8, "high_noise", 0.9, "sigmoid", "balanced", torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(sigmas_from_timesteps(torch.tensor([500.0])), torch.tensor([0.5]))


def test_empty_slice_falls_back_to_the_continuous_range(monkeypatch: pytest.MonkeyPatch) -> None:
    import wanlora.engine.train.timesteps as ts

    monkeypatch.setattr(ts, "timestep_table", lambda kind, generator=None, n=1000: torch.linspace(850, 1, n))
    t = ts.sample_timesteps(5000, "high_noise", 0.9, "sigmoid", "balanced", torch.Generator().manual_seed(0))
    assert t.min() >= 900 and t.max() <= 1000
    monkeypatch.setattr(ts, "timestep_table", lambda kind, generator=None, n=1000: torch.linspace(1000, 950, n))
    t = ts.sample_timesteps(5000, "low_noise", 0.9, "sigmoid", "low_noise", torch.Generator().manual_seed(0))
    assert t.max() < 900 and t.min() >= 1


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError):
        timestep_table("cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sample_timesteps(1, "high_noise", 0.9, "linear", "middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        expert_slice(timestep_table("linear"), "mid", 0.9)  # type: ignore[arg-type]
