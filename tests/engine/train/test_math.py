"""The math of differential guidance, DOP and EMA, on small real modules (pure functions, exact checks)."""

from __future__ import annotations

import pytest
import torch
from wanlora.engine.train.dop import lora_disabled, preservation_prompt, preservation_term
from wanlora.engine.train.ema import LoraEma, ema_update, file_weights
from wanlora.engine.train.objective import differential_guidance_target, mse_loss

pytestmark = pytest.mark.usefixtures("_home")  # a private WANLORA_HOME, offline (tests/engine/conftest.py)


def _grad_of_pred(scale: float | None, pred0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = pred0.clone().requires_grad_(True)
    tgt = target if scale is None else differential_guidance_target(pred, target, scale)
    mse_loss(pred, tgt).backward()
    return pred.grad


def test_differential_guidance_overshoots_the_target_and_scales_the_step() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 16, 3, 4, 4, generator=g)
    s = 3.0
    t2 = differential_guidance_target(pred, target, s)
    torch.testing.assert_close(t2, pred + s * (target - pred))
    torch.testing.assert_close(differential_guidance_target(pred, target, 1.0), target)  # s = 1: plain target
    # pred is detached inside: the gradient is s × the plain MSE gradient, so an SGD step moves s× as far
    plain = _grad_of_pred(None, pred, target)
    torch.testing.assert_close(_grad_of_pred(s, pred, target), s * plain)

    lin = torch.nn.Linear(4, 4)
    x, y = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    moves = []
    for scale in (None, 2.0):
        m = torch.nn.Linear(4, 4)
        m.load_state_dict(lin.state_dict())
        out = m(x)
        mse_loss(out, y if scale is None else differential_guidance_target(out, y, scale)).backward()
        with torch.no_grad():
            moves.append(-0.1 * m.weight.grad)
    torch.testing.assert_close(moves[1], 2.0 * moves[0])


def test_ema_update_formula_and_saved_weights_are_the_shadows() -> None:
    s, w = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    torch.testing.assert_close(ema_update(s.clone(), w, 0.9), 0.9 * s + 0.1 * w)

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(2, 1, bias=False)})
            torch.nn.init.zeros_(self.lora_A["default"].weight)

    m = Tiny()
    ema = LoraEma(m, 0.5)
    (key,) = ema.shadow
    assert key == "lora_A.weight"  # the key lora_state_dict uses: adapter name removed
    p = m.lora_A["default"].weight
    values, expect = [4.0, 8.0, 0.0], 0.0
    for v in values:
        with torch.no_grad():
            p.fill_(v)
        ema.update()
        expect = 0.5 * expect + 0.5 * v
    torch.testing.assert_close(ema.shadow[key], torch.full((1, 2), expect))  # 0 → 2 → 5 → 2.5
    with ema.applied():
        torch.testing.assert_close(p.detach(), torch.full((1, 2), expect))
    torch.testing.assert_close(p.detach(), torch.zeros(1, 2))  # restored after the preview

    class Ex:
        extra = {"ema": ema}

    weights, meta = file_weights(Ex(), {key: p.detach()})
    torch.testing.assert_close(weights[key], torch.full((1, 2), expect))
    assert meta["weights"] == "ema" and meta["ema_decay"] == "0.5"
    restored = LoraEma(m, 0.5)
    restored.load_state_dict(ema.state_dict())  # the resumable state round-trips
    torch.testing.assert_close(restored.shadow[key], ema.shadow[key])
    with pytest.raises(ValueError):
        LoraEma(m, 1.0)


def test_preservation_prompt_replaces_the_trigger_with_the_class() -> None:
    assert preservation_prompt("[trigger], a woman walking", "frung", "person") == "person, a woman walking"
    assert preservation_prompt("frung walking; not frungle", "frung", "person") == "person walking; not frungle"
    # a caption without the trigger: the class takes the place the injected trigger would have had, so the
    # preservation prompt is never the caption being trained (unless the caller says it is regularization data)
    assert preservation_prompt("a castle", "frung", "scene") == "scene a castle"
    assert preservation_prompt("a castle", "frung", "scene", add_if_missing=False) == "a castle"


def test_dop_term_pulls_the_lora_toward_the_base_and_only_trains_the_lora(tiny_pipe) -> None:
    import copy

    from wanlora.engine.model.lora import add_lora

    base = copy.deepcopy(tiny_pipe.transformer).float().eval()
    model = copy.deepcopy(base)
    params = add_lora(model, 4, 4)
    g = torch.Generator().manual_seed(0)
    inp, emb = torch.randn(1, 36, 3, 8, 8, generator=g), torch.randn(1, 16, 32, generator=g)
    t = torch.tensor([950.0])
    assert float(preservation_term(model, inp, t, emb, 1.0).detach()) == 0.0  # fresh LoRA (B = 0): nothing to preserve
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    with torch.no_grad():
        ref = base(inp, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
        with lora_disabled(model):
            off = model(inp, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
        on = model(inp, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
    torch.testing.assert_close(off, ref)  # LoRA off = the base model exactly
    assert all(p.requires_grad for p in params)  # switching it off did not freeze it
    term = preservation_term(model, inp, t, emb, 2.0)
    torch.testing.assert_close(term, 2.0 * mse_loss(on, ref))
    assert float(term.detach()) > 0
    term.backward()
    assert all(p.grad is not None for p in params)
    assert not any(p.grad is not None for n, p in model.named_parameters() if "lora_" not in n)
