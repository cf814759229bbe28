"""Host copies of many frozen tensors as views into a few large buffers, pinned where CUDA is.

PyTorch's pinned allocator rounds every request up to a power of two: pinning an nf4 expert tensor by tensor
(~400 Linears of 13–35 MB) costs up to half as much host RAM again, and a 12 GB card's machine often has little
to spare.  One buffer per ``chunk_bytes`` (a power of two by default) wastes at most the tail of each chunk.
Low-VRAM expert parking (``engine.train.parking``) and layer offloading (``engine.model.offload``) both keep
their host copies here.
"""

from __future__ import annotations

import torch

ALIGN = 64  # bytes: every view starts on a boundary any dtype can be read from
CHUNK = 1 << 30  # 1 GiB: a power of two, so the pinned allocator adds nothing to it


def _padded(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class HostArena:
    """Copies tensors into host buffers of ``chunk_bytes`` (a tensor larger than that gets its own buffer)."""

    def __init__(self, chunk_bytes: int = CHUNK, pin: bool | None = None) -> None:
        self.chunk_bytes = chunk_bytes
        self.pin = torch.cuda.is_available() if pin is None else pin
        self.pinned = False  # a pinned buffer was made (host-to-device copies can then be asynchronous)
        self.buffers = 0
        self._buf: torch.Tensor | None = None
        self._off = 0

    def _new(self, nbytes: int) -> torch.Tensor:
        if self.pin:
            try:
                buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
                self.pinned = True
                return buf
            except RuntimeError:  # not enough page-lockable memory: pageable still works, only slower
                self.pin = False
        return torch.empty(nbytes, dtype=torch.uint8)

    def copy(self, t: torch.Tensor) -> torch.Tensor:
        """A host copy of ``t`` (same dtype and shape), a view into the current buffer."""
        nbytes = t.numel() * t.element_size()
        size = _padded(nbytes)
        if self._buf is None or self._off + size > self._buf.numel():
            self._buf, self._off = self._new(max(self.chunk_bytes, size)), 0
            self.buffers += 1
        view = self._buf[self._off:self._off + nbytes].view(t.dtype).view(t.shape)
        view.copy_(t.detach())
        self._off += size
        return view


def padded_bytes(tensors: list[torch.Tensor]) -> int:
    """What ``tensors`` take in one arena buffer (each rounded up to :data:`ALIGN`)."""
    return sum(_padded(t.numel() * t.element_size()) for t in tensors)


__all__ = ["HostArena", "padded_bytes", "ALIGN", "CHUNK"]
