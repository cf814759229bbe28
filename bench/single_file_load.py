"""Load time and peak host RAM of one Wan 2.2 A14B expert from a ComfyUI single file, then one LoRA step on it.

Writes a random full-size expert in ComfyUI's fp8-scaled layout (streamed: one tensor in memory), loads it
through ``model.high_noise_file``'s path (``single_file.load_expert_file``: tensor by tensor to the device,
fp8 weights kept as ``Fp8Linear`` bases as stored), attaches the LoRA and runs one forward/backward.

    python bench/single_file_load.py --dir /workspace/bench_files          # GPU: full size, fp8_scaled
    python bench/single_file_load.py --tiny                                # CPU smoke run of the same code

Prints one JSON line (write_s, load_s, peak_host_rss_gib, host_rss_delta_gib, gpu_alloc_gib, step_s, …).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_gib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/wanlora_bench_files")
    ap.add_argument("--precision", default="fp8_scaled", choices=["fp8_scaled", "bf16", "fp16"])
    ap.add_argument("--tiny", action="store_true", help="small config on the CPU (smoke test)")
    ap.add_argument("--frames", type=int, default=3, help="latent frames of the step's input")
    ap.add_argument("--size", type=int, default=64, help="latent H=W of the step's input")
    args = ap.parse_args()

    import torch
    from wanlora.engine.model import single_file as sf
    from wanlora.engine.model import weight_files as wf
    from wanlora.engine.model.lora import add_lora

    cfg = wf.config_for(wf.HIGH)
    if args.tiny:
        cfg = {**cfg, "num_attention_heads": 2, "attention_head_dim": 16, "ffn_dim": 64, "num_layers": 2, "text_dim": 32}
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    path = Path(args.dir) / f"wan2.2_i2v_high_noise_14B_{args.precision}{'_tiny' if args.tiny else ''}.safetensors"
    t0 = time.perf_counter()
    if not path.exists():
        sf.write_random_expert(path, cfg, precision=args.precision, expert=wf.HIGH)
    write_s = time.perf_counter() - t0
    rep = wf.check_part(wf.HIGH, path)  # the tiny config is refused by size (errors listed, not fatal)
    rss0 = _rss_gib()
    t0 = time.perf_counter()
    model = sf.load_expert_file(path, cfg, dtype=dtype, device=device, fp8_base=args.precision == "fp8_scaled")
    if device.type == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    rss1 = _rss_gib()
    fp8 = sum(type(m).__name__ == "Fp8Linear" for m in model.modules())
    params = add_lora(model, 16, 16, "attn+ffn", dtype=dtype)
    model.train()
    x = torch.randn(1, 36, args.frames, args.size, args.size, device=device, dtype=dtype)
    text = torch.randn(1, 512, cfg["text_dim"], device=device, dtype=dtype)
    t0 = time.perf_counter()
    out = model(x, torch.tensor([950.0], device=device), text, return_dict=False)[0]
    out.float().pow(2).mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = time.perf_counter() - t0
    ok = all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    row = {"file": str(path), "file_gib": round(path.stat().st_size / 2**30, 2), "layout": rep.layout,
           "precision": rep.precision, "check_errors": rep.errors, "device": str(device),
           "write_s": round(write_s, 1), "load_s": round(load_s, 2), "host_rss_before_gib": round(rss0, 2),
           "host_rss_after_load_gib": round(rss1, 2),
           "peak_host_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
           "fp8_linears": fp8, "gpu_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
           if device.type == "cuda" else None, "step_s": round(step_s, 2), "lora_grads_finite": ok}
    print(json.dumps(row))
    return 0 if ok and not (rep.errors and not args.tiny) else 1


if __name__ == "__main__":
    sys.exit(main())
