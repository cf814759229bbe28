"""Where one trainer step's time goes: device time per kind of kernel, and the time the device sat idle.

``wanlora trial --profile`` runs one extra step per bucket under ``torch.profiler`` and reports this next to
the step's FLOPs, so a missed speed target comes with what stands between the step and the FLOP floor
(issue #15): attention kernels, matmuls, the fused elementwise glue that ``torch.compile`` writes, copies,
and the rest.  Kinds are read from kernel names (CUDA) or aten op names (CPU), by the first rule that
matches, so every microsecond is counted once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

# (kind, name fragments), first match wins: attention before matmul (cuDNN/FA kernels contain "gemm"-like
# words), matmul before the Triton glue (a Triton matmul template is still a matmul).
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("sdpa", "fmha", "flash", "attention", "attn")),
    ("matmul", ("gemm", "xmma", "nvjet", "wgmma", "cutlass", "cublas", "scaled_mm", "aten::mm", "aten::addmm",
                "aten::bmm", "aten::_scaled_mm", "matmul")),
    ("fused", ("triton",)),
    ("copy", ("memcpy", "memset", "copy", "cat", "to_copy")),
)


def kind_of(name: str) -> str:
    """The kind of one kernel or op, from its name; ``other`` when no rule matches."""
    low = name.lower()
    for kind, parts in KINDS:
        if any(p in low for p in parts):
            return kind
    return "other"


def summarize(times_us: Iterable[tuple[str, float]], wall_s: float, top: int = 8) -> dict[str, Any]:
    """Seconds per kind, busy vs idle against the wall time, and the ``top`` kernels by time."""
    per: dict[str, float] = {}
    by_name: dict[str, float] = {}
    for name, us in times_us:
        if us <= 0:
            continue
        per[kind_of(name)] = per.get(kind_of(name), 0.0) + us / 1e6
        by_name[name] = by_name.get(name, 0.0) + us / 1e6
    busy = sum(per.values())
    return {
        "wall_s": round(wall_s, 4),
        "busy_s": round(busy, 4),
        "idle_s": round(max(0.0, wall_s - busy), 4),
        "kinds_s": {k: round(v, 4) for k, v in sorted(per.items(), key=lambda kv: -kv[1])},
        "top": [{"name": n[:120], "s": round(s, 4), "kind": kind_of(n)}
                for n, s in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]],
    }


def profile_call(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Run ``fn`` once under the profiler: device kernels on CUDA, aten ops' own CPU time elsewhere."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    if cuda:
        torch.cuda.synchronize(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    rows = []
    for evt in prof.key_averages():
        if cuda:
            if evt.device_type != torch.autograd.DeviceType.CUDA:
                continue
            rows.append((evt.key, float(evt.self_device_time_total)))
        elif evt.key.startswith("aten::"):
            rows.append((evt.key, float(evt.self_cpu_time_total)))
    return summarize(rows, wall)


__all__ = ["KINDS", "kind_of", "summarize", "profile_call"]
