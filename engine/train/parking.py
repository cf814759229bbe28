"""Where a ``low_vram`` expert waits while the other one trains: its frozen weights in pinned host memory.

The frozen base of an expert never changes during training, so once it has a host copy, parking it again needs
no device→host copy at all: its tensors point back at the pinned copy and the GPU blocks are freed.  Bringing it
back is one host→device copy from pinned memory (the DMA engine's full speed, asynchronous to the CPU).  Before,
``Module.to("cpu")`` copied the whole expert both ways through pageable memory on every switch: 7.1–7.4 s per
switch for an 8 GiB nf4 expert on an H100 (BENCHMARKS §00b), every ``switch_every`` steps.

The trainable LoRA parameters stay on the GPU (their optimizer state always did): they change every step, are
small (about 0.3 GiB in fp32 for a rank-16 expert), and keeping them there means no copy for them either.
bitsandbytes' nf4 statistics (``quant_state``, not a buffer) move with the packed weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from wanlora.engine.model.host_arena import HostArena, padded_bytes


def _tensors(model: nn.Module) -> Iterator[tuple[tuple[int, str], torch.Tensor, bool]]:
    """Every parameter and buffer of ``model``: (slot, tensor, trainable)."""
    for mod in model.modules():
        for store in (mod._parameters, mod._buffers):
            for key, t in store.items():
                if t is not None:
                    yield (id(mod), key), t, isinstance(t, nn.Parameter) and t.requires_grad


def _set(t: torch.Tensor, value: torch.Tensor) -> None:
    """Point ``t`` at ``value``'s storage, keeping the tensor object (what ``Module.to`` does between CPU and
    CUDA), so optimizers and compiled blocks keep their references."""
    t.data = value


def _move_quant_states(model: nn.Module, device: torch.device) -> None:
    for mod in model.modules():
        state: Any = getattr(mod, "quant_state", None)
        if state is not None and hasattr(state, "to"):
            state.to(device)


class ParkedWeights:
    """One expert's placement under ``low_vram``: :meth:`park` sends it to host memory, :meth:`unpark` to
    ``device``; the host copies of its frozen tensors are made once and reused.

    They are views into one buffer per expert, pinned where CUDA is: PyTorch's pinned allocator rounds each
    request up to a power of two, which for ~1000 tensors of an nf4 expert would waste up to half again its 7.5
    GiB; one buffer costs at most the rounding of one request.  Both experts' frozen weights then live in host
    memory for the whole run (about 16 GiB for two nf4 experts); if pinning fails the buffer is pageable."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.host: dict[tuple[int, str], torch.Tensor] = {}
        self.copies_to_host = 0  # frozen tensors copied device -> host (once each; a test counts them)
        self.pinned = False

    def on_device(self, device: torch.device) -> bool:
        """Whether the frozen weights are on ``device`` now."""
        # asked before every step: the first frozen tensor answers, without walking the whole expert
        first = next((t for _, t, trainable in _tensors(self.model) if not trainable), None)
        return first is not None and first.device.type == device.type

    def _ensure_host(self) -> None:
        """The host copy of every frozen tensor, made the first time (from wherever the tensors are now)."""
        if self.host:
            return
        frozen = [(slot, t) for slot, t, trainable in _tensors(self.model) if not trainable]
        arena = HostArena(chunk_bytes=padded_bytes([t for _, t in frozen]))  # one buffer for the whole expert
        for slot, t in frozen:
            self.host[slot] = arena.copy(t)
            if t.device.type != "cpu":
                self.copies_to_host += 1
        self.pinned = arena.pinned

    def park(self) -> None:
        """Frozen tensors point at their host copies (made now if this is the first time); the GPU blocks
        are free once nothing else holds them."""
        self._ensure_host()
        for slot, t, trainable in _tensors(self.model):
            if not trainable and t.device.type != "cpu":
                host = self.host.get(slot)  # None: added after the copies were made (a preview's accelerator)
                _set(t, host if host is not None else t.to("cpu"))
        _move_quant_states(self.model, torch.device("cpu"))

    def unpark(self, device: torch.device) -> None:
        """Everything on ``device``: frozen tensors copied from their host copies, the LoRA moved if it is not
        there yet (the first time)."""
        self._ensure_host()
        for slot, t, trainable in _tensors(self.model):
            if t.device.type == device.type:
                continue
            src = self.host.get(slot, t) if not trainable else t
            _set(t, src.to(device, non_blocking=self.pinned and src is not t))
        _move_quant_states(self.model, device)


__all__ = ["ParkedWeights"]
