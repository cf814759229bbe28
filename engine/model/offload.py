"""Layer offloading for 10–12 GB cards: frozen block weights live in pinned CPU memory and stream in.

Only the big frozen tensors of each block (the base Linears' weights, fp8 or bf16) move; LoRA parameters,
their optimizer state, norms and everything outside the blocks stay on the GPU, so optimizer updates are
never lost (diffusers' group offload with streams restores stale CPU copies of trainable weights).

Blocks run in order 0…N-1 in the forward pass and N-1…0 when checkpointed blocks are recomputed in
backward; the streamer follows that direction and prefetches the next block on a side stream while the
current one computes, keeping at most two blocks' weights on the GPU.  Every block must be checkpointed
(otherwise autograd would keep every block's weights alive until backward).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from wanlora.engine.model.fp8_linear import Fp8Linear
from wanlora.engine.model.host_arena import HostArena
from wanlora.engine.model.meta import has_meta, materialize_
from wanlora.engine.model.quant import Mode, Nf4Linear, place_outside_blocks, quantize_block

# The bulk of each block: base Linear weights (NF4 keeps its small quantisation statistics on the GPU).
_STREAMED = {Fp8Linear: ("weight_q",), Nf4Linear: ("weight_packed",), nn.Linear: ("weight",)}


def _heavy_tensors(block: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, attribute) of the frozen weights worth streaming: base Linears, not LoRA adapters."""
    out = []
    for name, mod in block.named_modules():
        if ".lora_" in f".{name}" or name.split(".")[-1].startswith("lora_"):
            continue
        for cls, attrs in _STREAMED.items():
            if type(mod) is cls:
                for a in attrs:
                    t = getattr(mod, a)
                    if not (isinstance(t, nn.Parameter) and t.requires_grad):
                        out.append((mod, a))
    return out


class BlockStreamer:
    """Streams each transformer block's frozen weights from pinned CPU memory just before it runs."""

    def __init__(self, transformer: nn.Module, device: torch.device, *, compile_blocks: bool = False,
                 quantize: Mode = "none") -> None:
        """``quantize``: the base Linears' format (``quantization.transformer``), applied block by block as each
        block goes to host memory — quantising the whole expert on the GPU first would need all of it there
        (7.5 GiB in nf4, beside the text encoder, over a 12 GB card)."""
        self.device = device
        self.blocks = list(transformer.blocks)
        place_outside_blocks(transformer, device)  # embeddings, norms, proj_out: small, always resident
        self.quantized = 0  # base Linears quantised on the way
        self.cuda = device.type == "cuda"
        # the streamed weights' host copies: ~1 GiB pinned buffers, not one power-of-two pinned block per tensor
        self.arena = HostArena(pin=self.cuda)
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.cpu: list[list[tuple[nn.Module, str, torch.Tensor]]] = []
        self.loaded: dict[int, tuple[list[torch.Tensor], Any]] = {}
        self.last: int | None = None
        self.bytes_per_pass = 0
        for i, block in enumerate(self.blocks):
            if quantize != "none":
                self.quantized += quantize_block(block, quantize, device)
            elif has_meta(block):  # the trial's random weights: drawn on the device, as a loaded block is read
                materialize_(block, device)
            entries = []
            for mod, attr in _heavy_tensors(block):
                host = self.arena.copy(getattr(mod, attr))
                entries.append((mod, attr, host))
                self.bytes_per_pass += host.numel() * host.element_size()
            self.cpu.append(entries)
            for mod, attr, host in entries:
                self._assign(mod, attr, torch.empty(0, dtype=host.dtype, device=device))
            block.to(device)  # everything else of the block (norms, LoRA, biases) stays resident
            self._wrap(i, block, compile_blocks)
        if self.cuda:
            torch.cuda.empty_cache()

    @staticmethod
    def _assign(mod: nn.Module, attr: str, value: torch.Tensor) -> None:
        if isinstance(getattr(mod, attr), nn.Parameter):
            setattr(mod, attr, nn.Parameter(value, requires_grad=False))
        else:
            setattr(mod, attr, value)

    def _wrap(self, i: int, block: nn.Module, compile_blocks: bool) -> None:
        inner: Callable[..., Any] = block.forward
        if compile_blocks:
            inner = torch.compile(inner)

        def forward(*args: Any, **kwargs: Any) -> Any:
            self.before(i)
            return inner(*args, **kwargs)

        block.forward = forward  # type: ignore[method-assign]

    # ------------------------------------------------------------------ streaming
    def _start_load(self, i: int) -> None:
        if i in self.loaded or not (0 <= i < len(self.blocks)):
            return
        if self.cuda:
            with torch.cuda.stream(self.stream):
                tensors = [host.to(self.device, non_blocking=True) for _m, _a, host in self.cpu[i]]
                event = torch.cuda.Event()
                event.record(self.stream)
        else:
            tensors, event = [host for _m, _a, host in self.cpu[i]], None
        self.loaded[i] = (tensors, event)

    def _install(self, i: int) -> None:
        tensors, event = self.loaded[i]
        if event is not None:
            cur = torch.cuda.current_stream(self.device)
            cur.wait_event(event)
            for t in tensors:
                t.record_stream(cur)
        for (mod, attr, _host), t in zip(self.cpu[i], tensors, strict=True):
            self._assign(mod, attr, t)

    def _evict(self, i: int) -> None:
        self.loaded.pop(i, None)
        for mod, attr, host in self.cpu[i]:
            self._assign(mod, attr, torch.empty(0, dtype=host.dtype, device=self.device))

    def before(self, i: int) -> None:
        """Called as block ``i`` starts: make its weights present, prefetch the next, evict the rest."""
        if self.last is None or i > self.last:
            direction = 1
        elif i < self.last:
            direction = -1
        else:  # the same block again: the last block's recompute turns the pass around
            direction = -1 if i == len(self.blocks) - 1 else 1
        self._start_load(i)
        self._install(i)
        nxt = i + direction
        keep = {i, nxt}
        for j in list(self.loaded):
            if j not in keep:
                self._evict(j)
        self._start_load(nxt)
        self.last = i
