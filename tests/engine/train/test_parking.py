"""A low_vram switch copies an expert's frozen weights host→device only: parking points them back at the host
copy made once (no device→host copy, the GPU blocks freed), the LoRA stays where it trains, and a round trip
gives the same values.  The CPU has no second device, so ``meta`` stands for the GPU: it holds no data, so any
device→host copy of a parked frozen tensor would fail here, which is what this test relies on.  (Between CPU
and CUDA the product re-points a tensor with ``.data``; PyTorch refuses that between CPU and meta, so here the
same re-pointing is done with ``torch.utils.swap_tensors``, which keeps the tensor object too.)"""

from __future__ import annotations

import torch
from torch import nn
from wanlora.engine.train import parking
from wanlora.engine.train.parking import ParkedWeights

GPU = torch.device("meta")


class _Quant:
    """Stands in for bitsandbytes' QuantState (not a buffer: moved by its own .to)."""

    def __init__(self) -> None:
        self.absmax = torch.ones(4)

    def to(self, device: torch.device) -> None:  # small statistics are copied both ways (meta holds no data)
        self.absmax = torch.ones(4, device=device) if self.absmax.is_meta else self.absmax.to(device)


def _expert() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 4))
    m.requires_grad_(False)
    m[0].lora_A = nn.Parameter(torch.randn(2, 8))  # trainable, as peft's LoRA
    m[0].register_buffer("weight_packed", torch.randint(0, 255, (16,), dtype=torch.uint8))
    m[0].quant_state = _Quant()
    return m


def _repoint(t: torch.Tensor, value: torch.Tensor) -> None:
    view = value.view_as(value)  # a new tensor object on value's storage (swap_tensors gives it t's old one)
    if isinstance(t, nn.Parameter):
        view = nn.Parameter(view, requires_grad=t.requires_grad)
    torch.utils.swap_tensors(t, view)


def test_switches_copy_frozen_weights_only_host_to_device_and_keep_them_exact(monkeypatch) -> None:
    monkeypatch.setattr(parking, "_set", _repoint)
    m = _expert()
    frozen = {n: t.clone() for n, t in [*m.named_parameters(), *m.named_buffers()] if not n.endswith("lora_A")}
    params = list(m.parameters())
    lora = m[0].lora_A
    parked = ParkedWeights(m)

    parked.unpark(GPU)  # the experts wait on the host while caching runs; the first switch brings one in
    assert parked.on_device(GPU) and lora.device == GPU and m[0].quant_state.absmax.device == GPU
    host_ptrs = {slot: h.data_ptr() for slot, h in parked.host.items()}
    assert len(host_ptrs) == len(frozen)  # one host copy per frozen parameter and buffer, no LoRA
    # all of them views of one buffer (pinned on CUDA: the pinned allocator rounds each request up to a power
    # of two, which per tensor would waste up to half an expert again)
    assert len({h.untyped_storage().data_ptr() for h in parked.host.values()}) == 1

    for _ in range(3):  # switch away and back three times
        parked.park()
        assert not parked.on_device(GPU)
        assert lora.device == GPU  # the LoRA (and its optimizer state) never leave the GPU
        assert m[0].quant_state.absmax.device.type == "cpu"
        for slot, t in ((s, t) for s, t, trainable in _slots(m) if not trainable):
            assert t.data_ptr() == host_ptrs[slot]  # back on the host copy made once, not a fresh copy
        parked.unpark(GPU)
    assert parked.copies_to_host == 0  # nothing ever came back from the "GPU" (meta holds no data)
    assert all(p is q for p, q in zip(params, m.parameters(), strict=True))  # optimizer refs stay valid

    parked.park()
    for n, t in [*m.named_parameters(), *m.named_buffers()]:
        if n in frozen:
            assert torch.equal(t, frozen[n]), n  # exact values after the round trips


def _slots(m: nn.Module):
    for mod in m.modules():
        for store in (mod._parameters, mod._buffers):
            for key, t in store.items():
                if t is not None:
                    yield (id(mod), key), t, isinstance(t, nn.Parameter) and t.requires_grad
