"""What fp32 LoRA masters cost per adapted Linear of a Wan 2.2 A14B block, three ways (one JSON line each):

- ``bf16``        the LoRA in bf16 (``advanced.lora_master_dtype = "bf16"``, earlier builds on CUDA)
- ``fp32-master`` fp32 LoRA, matmuls in the input's bf16 (``engine.model.lora.InputDtypeLinear``, the default)
- ``fp32-peft``   fp32 LoRA left to peft, which casts the bf16 input up: the whole LoRA branch runs in fp32

For each: forward+backward time of the Linear with its LoRA, the bytes autograd keeps for backward, and the LoRA
branch's share of the layer's matmul FLOPs (2·N·r·(in+out) against the base's 2·N·in·out).  CPU timings say
little about a GPU (bf16 and fp32 matmuls run at ~1:1 here, ~15:1 on an H100 without TF32); the saved bytes and
the FLOPs are the same everywhere.

    python bench/lora_master.py                       # CPU: 1024 tokens, rank 32
    python bench/lora_master.py --tokens 11264 --rank 32 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("bf16", "fp32-master", "fp32-peft")
SHAPES = {"attn 5120x5120": (5120, 5120), "ffn.0 5120->13824": (5120, 13824), "ffn.2 13824->5120": (13824, 5120)}


def _layer(d_in: int, d_out: int, rank: int, mode: str, device):
    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from wanlora.engine.model.lora import compute_in_input_dtype

    class One(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(d_in, d_out, device=device, dtype=torch.bfloat16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

    m = One().requires_grad_(False)
    m = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=["proj"]), m)
    params = [p for n, p in m.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
        p.data = p.data.to(torch.bfloat16 if mode == "bf16" else torch.float32)
        torch.nn.init.normal_(p, std=0.01)
    if mode != "fp32-peft":
        compute_in_input_dtype(m)
    return m, params


def _saved_bytes(m, x) -> int:
    """Bytes of the distinct tensors autograd keeps for backward during one forward."""
    import torch

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(x)
    del y
    return sum(seen.values())


def measure(d_in: int, d_out: int, tokens: int, rank: int, mode: str, device, repeats: int) -> dict:
    import torch

    m, params = _layer(d_in, d_out, rank, mode, device)
    # the input of an adapted layer mid-block: bf16 activations that need no grad of their own here
    x = torch.randn(tokens, d_in, device=device, dtype=torch.bfloat16)
    saved = _saved_bytes(m, x)
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        m(x).float().pow(2).mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first run warms up
            times.append(time.perf_counter() - t0)
        for p in params:
            p.grad = None
    base_flops = 2 * tokens * d_in * d_out
    lora_flops = 2 * tokens * rank * (d_in + d_out)
    return {"mode": mode, "shape": f"{d_in}x{d_out}", "tokens": tokens, "rank": rank, "device": str(device),
            "fwd_bwd_ms": round(1e3 * statistics.median(times), 2), "saved_for_backward_mib": round(saved / 2**20, 1),
            "input_mib": round(x.numel() * x.element_size() / 2**20, 1),
            "lora_share_of_matmul_flops": round(lora_flops / base_flops, 4),
            "lora_param_dtype": str(params[0].dtype).removeprefix("torch.")}


def main() -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1024, help="video tokens (41 frames at 512²: 11264)")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    for label, (d_in, d_out) in SHAPES.items():
        for mode in MODES:
            row = measure(d_in, d_out, args.tokens, args.rank, mode, device, args.repeats)
            print(json.dumps({"layer": label, **row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
