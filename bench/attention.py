"""Attention kernels on Wan 2.2 A14B's self-attention shapes, forward + backward (issue #15).

    python bench/attention.py --out results/attention.jsonl            # every kernel importable here

One expert's self-attention is 40 heads × 128 at 11k–33k tokens (41×512², 41×480×848, 81×480×848): more
than half of a step's FLOPs at 81 frames.  Each row times one kernel on one shape (batch 1, bf16): the
forward alone and forward + backward, median of ``--reps`` after ``--warmup``, as TFLOP/s (forward 4·N²·d,
backward 2.5× that), and the cosine of its output and q-gradient against cuDNN's.  Kernels:

- ``cudnn``, ``flash`` (FlashAttention-2 in PyTorch), ``efficient``: ``torch.nn.functional.scaled_dot_product_attention``
  pinned to one SDPA backend (cuDNN is what the trainer uses today);
- ``fa4``: FlashAttention-4 (``flash_attn.cute``, the ``flash-attn-4`` wheel; has Hopper kernels), when importable.

This isolates one lever; what it gives the trainer is measured through ``wanlora trial --profile``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {"41x512x512": 11 * 32 * 32, "41x480x848": 11 * 30 * 53, "81x480x848": 21 * 30 * 53}
HEADS, DIM = 40, 128


def _kernels() -> dict[str, Callable]:
    """name → f(q, k, v) for tensors laid out (batch, tokens, heads, dim), as diffusers passes them."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def sdpa(backend):
        def f(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                      v.transpose(1, 2)).transpose(1, 2)
        return f

    out = {"cudnn": sdpa(SDPBackend.CUDNN_ATTENTION), "flash": sdpa(SDPBackend.FLASH_ATTENTION),
           "efficient": sdpa(SDPBackend.EFFICIENT_ATTENTION)}
    try:
        from flash_attn.cute import flash_attn_func

        def fa4(q, k, v):
            o = flash_attn_func(q, k, v)
            return o[0] if isinstance(o, tuple) else o
        out["fa4"] = fa4
    except Exception as e:  # noqa: BLE001 — a missing or broken wheel is a row that says so
        print(f"fa4 not available: {type(e).__name__}: {e}", file=sys.stderr)
    del torch
    return out


def _time(fn: Callable, warmup: int, reps: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def measure(name: str, f: Callable, tokens: int, warmup: int, reps: int, ref: dict | None) -> dict:
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, tokens, HEADS, DIM, device="cuda", dtype=torch.bfloat16, generator=g)
               for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_(True)
    do = torch.randn(1, tokens, HEADS, DIM, device="cuda", dtype=torch.bfloat16, generator=g)
    row: dict = {"kernel": name, "tokens": tokens}
    try:
        with torch.no_grad():
            fwd = _time(lambda: f(q, k, v), warmup, reps)

        def step():
            o = f(q, k, v)
            o.backward(do)
            q.grad = k.grad = v.grad = None

        both = _time(step, warmup, reps)
        o = f(q, k, v)
        o.backward(do)
        flop = 4 * tokens * tokens * HEADS * DIM
        row.update(fwd_ms=round(fwd * 1e3, 3), fwd_bwd_ms=round(both * 1e3, 3),
                   fwd_tflops=round(flop / fwd / 1e12, 1), fwd_bwd_tflops=round(3.5 * flop / both / 1e12, 1),
                   bwd_tflops=round(2.5 * flop / max(1e-9, both - fwd) / 1e12, 1))
        if ref is None:
            ref = {"o": o.detach().float(), "dq": q.grad.detach().float()}
            row["_ref"] = ref
        else:
            cos = torch.nn.functional.cosine_similarity
            row["out_cosine_vs_cudnn"] = round(float(cos(o.detach().float().flatten(), ref["o"].flatten(), 0)), 6)
            row["dq_cosine_vs_cudnn"] = round(float(cos(q.grad.float().flatten(), ref["dq"].flatten(), 0)), 6)
    except Exception as e:  # noqa: BLE001 — one kernel failing on one shape is a result, not a crash
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--kernels", default="", help="comma list (default: every one importable)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    from wanlora.engine.config.launch import use_trainer_env

    use_trainer_env()
    import torch

    kernels = _kernels()
    if a.kernels:
        kernels = {k: v for k, v in kernels.items() if k in a.kernels.split(",")}
    out = open(a.out, "a") if a.out else None  # noqa: SIM115
    for shape in a.shapes.split(","):
        ref = None
        for name in ["cudnn", *[k for k in kernels if k != "cudnn"]]:
            if name not in kernels:
                continue
            row = measure(name, kernels[name], SHAPES[shape], a.warmup, a.reps, ref)
            ref = row.pop("_ref", ref)
            row.update(shape=shape, gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                       date=time.strftime("%Y-%m-%d"))
            print(json.dumps(row), flush=True)
            if out:
                out.write(json.dumps(row) + "\n")
                out.flush()
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
