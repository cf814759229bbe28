"""Which GPUs this machine has and how much memory is free on them (NVML, no torch).

``vram_tier = "auto"`` needs the free memory of the GPUs a job will use; NVML answers in milliseconds
without creating a CUDA context.  No driver, no GPU or no ``pynvml`` all mean the same thing here: an
empty list, never an exception, so ``wanlora validate`` works on a laptop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from wanlora.engine.config.schema import VRAM_TIERS

GIB = float(1 << 30)
# A "24 GB" card shows ~23.6 GiB free and an "80 GB" H100 79.2 GiB total; a tier fits when the free
# memory reaches this share of its nominal size.
TIER_FIT = 0.9


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML sees it; sizes in GiB."""

    index: int
    name: str
    total_gb: float
    free_gb: float


class NvmlUnavailable(Exception):
    """NVML cannot be used here: ``missing`` (no pynvml installed) or not initialised (no driver/GPU)."""

    def __init__(self, missing: bool, cause: str) -> None:
        super().__init__(cause)
        self.missing = missing
        self.cause = cause  # the exception's type name (NVMLError_DriverNotLoaded, ...) or the import error


def open_nvml() -> Any:
    """The one place NVML is opened: the initialised ``pynvml`` module, or :class:`NvmlUnavailable`.  The
    daemon's telemetry keeps it open for its lifetime; everyone else uses :func:`nvml`."""
    try:
        import pynvml
    except ImportError as e:
        raise NvmlUnavailable(True, str(e)) from None
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no usable GPU here
        raise NvmlUnavailable(False, type(e).__name__) from None
    return pynvml


@contextmanager
def nvml() -> Iterator[Any]:
    """NVML for one use (``validate``, ``doctor``, ``auto`` tiers): the initialised ``pynvml`` module, shut
    down afterwards; :class:`NvmlUnavailable` without it."""
    pynvml = open_nvml()
    try:
        yield pynvml
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def driver_versions(nv: Any) -> tuple[str, tuple[int, int]]:
    """The driver version and the newest CUDA (major, minor) it supports, from an open :func:`nvml`."""
    drv = nv.nvmlSystemGetDriverVersion()
    cuda = nv.nvmlSystemGetCudaDriverVersion_v2()
    return (drv.decode() if isinstance(drv, bytes) else str(drv)), (cuda // 1000, (cuda % 1000) // 10)


def list_gpus(nv: Any) -> list[GpuInfo]:
    """Every GPU of an open :func:`nvml`; the ones read before a failing query when one fails."""
    out: list[GpuInfo] = []
    try:
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            name = nv.nvmlDeviceGetName(h)
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            out.append(GpuInfo(i, str(name), mem.total / GIB, mem.free / GIB))
    except Exception:
        return out
    return out


def visible(infos: list[GpuInfo], cuda_visible: str | None, uuid: Callable[[int], str] | None = None) -> list[GpuInfo]:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` leaves this process, in its order (NVML itself lists every GPU).

    Entries are NVML indices or UUID prefixes (``GPU-…``); as CUDA does, the list ends at the first entry that
    names no GPU (so ``""`` hides them all).  Indices stay NVML's, which is what ``job.gpus`` and the daemon's
    reservations use.  Unset: every GPU."""
    if cuda_visible is None:
        return infos
    out: list[GpuInfo] = []
    for entry in (e.strip() for e in cuda_visible.split(",")):
        if entry.isdigit():
            g = next((g for g in infos if g.index == int(entry)), None)
        elif entry.startswith(("GPU-", "MIG-")) and uuid is not None:
            g = next((g for g in infos if uuid(g.index).startswith(entry)), None)
        else:
            g = None
        if g is None or g in out:
            break
        out.append(g)
    return out


def detect_gpus() -> list[GpuInfo]:
    """The NVIDIA GPUs this process may use (``CUDA_VISIBLE_DEVICES`` honoured) with their total and free
    memory; ``[]`` when there is no driver or GPU.  A trial or trainer started on one card of a busy machine
    then resolves ``vram_tier = "auto"`` for that card, not for the machine's freest one."""
    try:
        with nvml() as nv:
            def uuid(i: int) -> str:
                try:
                    u = nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))
                except Exception:  # an NVML without UUIDs: such an entry then names no GPU
                    return ""
                return u.decode() if isinstance(u, bytes) else str(u)

            return visible(list_gpus(nv), os.environ.get("CUDA_VISIBLE_DEVICES"), uuid)
    except NvmlUnavailable:
        return []


def pick_tier(free_gb: float) -> int:
    """The largest VRAM tier that fits ``free_gb`` GiB; the smallest tier when none does."""
    fitting = [t for t in VRAM_TIERS if free_gb >= t * TIER_FIT]
    return max(fitting) if fitting else min(VRAM_TIERS)


def chosen_gpus(gpus: Any, infos: list[GpuInfo]) -> list[GpuInfo]:
    """The GPUs a job's ``job.gpus`` setting selects: "auto" = the one with the most free memory."""
    if not infos:
        return []
    if gpus == "auto":
        return [max(infos, key=lambda g: g.free_gb)]
    if gpus == "all":
        return list(infos)
    if isinstance(gpus, list):
        by_index = {g.index: g for g in infos}
        return [by_index[i] for i in gpus if i in by_index]
    return []


def free_vram_for(gpus: Any, infos: list[GpuInfo]) -> float | None:
    """Free GiB per GPU for a job (the smallest of its GPUs: data parallel runs the same step on each)."""
    chosen = chosen_gpus(gpus, infos)
    return min(g.free_gb for g in chosen) if chosen else None
