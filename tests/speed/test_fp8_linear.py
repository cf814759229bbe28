"""fp8 compute for the frozen base: numerics close to bf16/fp32, gradients reach LoRA only, names unchanged."""

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn
from wanlora.engine.model.fp8_linear import Fp8Linear, convert_to_fp8, quantize_tensorwise
from wanlora.engine.train.acceleration import blocks_to_checkpoint, set_checkpointing, video_tokens


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_quantize_roundtrip_is_within_fp8_precision():
    t = torch.randn(64, 64) * 3
    q, s = quantize_tensorwise(t)
    assert q.dtype == torch.float8_e4m3fn
    assert rel(q.float() * s, t) < 0.05  # e4m3 has a 3-bit mantissa: ~2-4 % relative error


def test_fp8_linear_forward_and_input_grad_match_reference():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48).requires_grad_(False)
    x = torch.randn(2, 7, 64, requires_grad=True)
    gy = torch.randn(2, 7, 48)
    ref = lin(x)
    ref.backward(gy)
    gref = x.grad.clone()
    x.grad = None
    f = Fp8Linear.from_linear(lin)
    y = f(x)
    y.backward(gy)
    assert y.shape == ref.shape
    assert rel(y, ref) < 0.06
    assert rel(x.grad, gref) < 0.12  # dy is e5m2 (2-bit mantissa)
    assert f.weight_q.element_size() == 1  # one byte per weight


def test_conversion_after_lora_keeps_names_and_trains_only_lora():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 16)).requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["0", "2"], init_lora_weights=False), m)
    names_before = sorted(n for n, p in m.named_parameters() if p.requires_grad)
    assert convert_to_fp8(m, lambda n, _c: True) == 2
    assert sorted(n for n, p in m.named_parameters() if p.requires_grad) == names_before
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    x, target = torch.randn(64, 32), torch.randn(64, 16)
    losses = []
    for _ in range(30):
        loss = nn.functional.mse_loss(m(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_checkpoint_plan_and_policy():
    assert video_tokens(41, 512, 512) == 11 * 32 * 32
    # plenty of memory: nothing checkpointed; none: everything
    assert blocks_to_checkpoint(40, 11264, 1, free_bytes=1e15) == 0
    assert blocks_to_checkpoint(40, 11264, 1, free_bytes=0) == 40
    mid = blocks_to_checkpoint(40, 11264, 1, free_bytes=30 * 2**30)
    assert 0 < mid < 40

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))
            self.gradient_checkpointing = False

        def forward(self, x):
            for b in self.blocks:
                x = self._gradient_checkpointing_func(b, x) if self.gradient_checkpointing else b(x)
            return x

    t = Tiny()
    runs = [0, 0, 0, 0]
    for i, b in enumerate(t.blocks):

        def counted(x, _i=i, _f=b.forward):
            runs[_i] += 1
            return _f(x)

        b.forward = counted
    set_checkpointing(t, 2)
    x = torch.randn(3, 8, requires_grad=True)
    t(x).sum().backward()
    # checkpointed blocks run forward twice (once more in backward), the others once
    assert runs == [2, 2, 1, 1]
    assert x.grad is not None
