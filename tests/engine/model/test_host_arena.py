"""Host copies of frozen weights (layer offloading, low_vram parking) go into a few large buffers: PyTorch's
pinned allocator rounds each request up to a power of two, so pinning ~400 Linears one by one cost up to half an
expert of host RAM again."""

from __future__ import annotations

import torch
from wanlora.engine.model.host_arena import ALIGN, HostArena

from tests.engine.model.test_offload_quant import tiny_lora_model


def test_copies_are_exact_views_packed_into_chunks() -> None:
    torch.manual_seed(0)
    tensors = [torch.randn(n, dtype=torch.bfloat16) for n in (100, 3000, 7, 5000)] + [torch.arange(9, dtype=torch.uint8)]
    arena = HostArena(chunk_bytes=8192, pin=False)
    copies = [arena.copy(t) for t in tensors]
    assert all(torch.equal(c, t) and c.dtype == t.dtype and c.shape == t.shape for c, t in zip(copies, tensors, strict=True))
    assert arena.buffers == 3  # 256 + 6016 bytes fill chunk 1; 64 + 10000 (its own buffer); then 64 in a third
    storages = [c.untyped_storage().data_ptr() for c in copies]
    assert storages[0] == storages[1] and len(set(storages)) == 3
    assert all(c.data_ptr() % ALIGN == 0 for c in copies)
    tensors[1].zero_()
    assert copies[1].abs().sum() > 0  # a copy, not a view of the original


def test_layer_offloading_keeps_every_streamed_weight_in_one_host_buffer() -> None:
    from wanlora.engine.model.offload import BlockStreamer

    m = tiny_lora_model()
    streamer = BlockStreamer(m, torch.device("cpu"))
    hosts = [h for entries in streamer.cpu for _m, _a, h in entries]
    assert len(hosts) == 3 * 10 and streamer.arena.buffers == 1  # the tiny model's blocks fit one 1 GiB chunk
    assert len({h.untyped_storage().data_ptr() for h in hosts}) == 1
