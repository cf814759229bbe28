"""fp8 layers inside checkpointed, compiled blocks trace as one graph from the very first step.

The first fp8 matmul used to cache "does this device do fp8" in a module-level dict.  When that first call
happened inside a checkpointed block (a plan whose first blocks are checkpointed: every long-video bucket),
dynamo met a side effect inside the checkpoint and threw the checkpoint out of the compiled graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from wanlora.engine.model import fp8_linear
from wanlora.engine.train import acceleration as acc


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.base = nn.Linear(d, d)
        self.lora = nn.Parameter(torch.zeros(d))  # something trainable, so the block has a backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.nn.functional.gelu(self.base(x)) * (1 + self.lora)


class Model(nn.Module):
    def __init__(self, d: int = 64, n: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(d) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x


@pytest.mark.parametrize("keep_attention", [0, 3], ids=["every-block-checkpointed", "keeping-attention"])
def test_no_graph_break_when_the_first_fp8_matmul_is_inside_a_checkpoint(keep_attention: int, monkeypatch) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    torch.manual_seed(0)
    m = Model()
    m.blocks.apply(lambda mod: isinstance(mod, nn.Linear) and mod.weight.requires_grad_(False))
    assert fp8_linear.convert_to_fp8(m, lambda name, _m: name.startswith("blocks.")) == 3
    acc.set_checkpointing(m, 3, save_attention=True, keep_attention=keep_attention)
    monkeypatch.setattr(fp8_linear, "_FP8_MM", {})  # a fresh process: nothing asked yet
    counters.clear()
    acc.compile_blocks(m, backend="aot_eager")
    x = torch.randn(2, 16, 64)
    m(x).sum().backward()
    assert dict(counters["graph_break"]) == {}, dict(counters["graph_break"])
    assert all(b.lora.grad is not None for b in m.blocks)
    torch._dynamo.reset()


@pytest.mark.parametrize("keep_attention", [0, 1, 3], ids=["frugal", "mixed", "keeping-attention"])
def test_the_wan_block_with_lora_fp8_and_the_flash_op_compiles_without_a_graph_break(keep_attention: int,
                                                                                        monkeypatch) -> None:
    """The trainer's own stack on the real Wan 2.2 block (tiny widths): peft LoRA, fp8 bases, attention
    through the ``wanlora::flash_attention`` op (the test's reference kernels), the trainer's checkpoint plans."""
    from torch._dynamo.utils import counters
    from wanlora.engine.model import attention

    from tests.engine.model.test_flash_attention_op import REF
    from tests.engine.model.test_offload_quant import inputs, tiny_lora_model

    torch._dynamo.reset()
    m = tiny_lora_model()
    assert acc.apply_fp8(m) > 0
    attention.route_to_flash(m, REF)
    acc.set_checkpointing(m, 3, save_attention=True, keep_attention=keep_attention)
    monkeypatch.setattr(fp8_linear, "_FP8_MM", {})
    counters.clear()
    acc.compile_blocks(m, backend="aot_eager")
    x, t, txt = inputs()
    m(x, timestep=t, encoder_hidden_states=txt, return_dict=False)[0].square().mean().backward()
    assert dict(counters["graph_break"]) == {}, dict(counters["graph_break"])
    assert any(p.grad is not None for p in m.parameters() if p.requires_grad)
    torch._dynamo.reset()
