"""Step time and peak memory of one full-size Wan 2.2 A14B expert LoRA training step, per speed lever.

Random weights (speed does not depend on values), built directly on the GPU in bf16 with diffusers'
fp32-kept modules, peft LoRA r16 on attn1/attn2 q,k,v,o + both FFN linears, AdamW (fused) on the LoRA
params, flow-matching MSE on random latents and 512 text tokens.  Each variant runs in a fresh process so
compile caches and allocator state do not leak between rows.

    python bench/step.py --shapes 41x512x512,41x480x832 --variants eager,compile,compile_fp8,compile_fp8_sel
    python bench/step.py --tiny        # CPU smoke run of the same code on a tiny model

Prints one JSON line per (variant, shape) and a table at the end; ``--out FILE`` appends the JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from wanlora.engine.config.launch import use_trainer_env  # noqa: E402

use_trainer_env()  # the trainer's allocator setting (expandable segments) and NVLink multicast off

FULL = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
TINY = dict(FULL, num_attention_heads=2, attention_head_dim=16, text_dim=32, ffn_dim=64, num_layers=2)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]


def build_expert(variant: str, dev, dtype, tiny: bool = False, rank: int = 16):
    """One expert with random weights built directly on ``dev`` (no CPU copy), LoRA attached, and the
    variant's levers that change weights applied (``fp8`` in the name → fp8 base, ``fp8row`` with row-wise
    scales; ``fp32lora``)."""
    import torch
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig
    from wanlora.engine.train import acceleration as acc

    cfg = TINY if tiny else FULL
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(dev):
        m = WanTransformer3DModel(**cfg)
    torch.set_default_dtype(prev)
    for name in WanTransformer3DModel._keep_in_fp32_modules:
        for mn, mod in m.named_modules():
            if mn.split(".")[-1] == name or mn == name:
                mod.float()
    m.requires_grad_(False)
    m.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS, init_lora_weights=True))
    if "fp8" in variant:
        acc.apply_fp8(m, scaling="row" if "fp8row" in variant else "tensor")
    if "fp32lora" in variant:
        for p in m.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    return m


def run_one(variant: str, shape: str, steps: int, warmup: int, tiny: bool, experts: int, batch: int) -> dict:
    import torch
    from wanlora.engine.train import acceleration as acc

    F, H, W = (int(v) for v in shape.split("x"))
    dev = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    cfg = TINY if tiny else FULL
    text_len = 16 if tiny else 512

    t0 = time.perf_counter()
    models = [build_expert(variant, dev, dtype, tiny) for _ in range(experts)]
    build_s = time.perf_counter() - t0
    tokens = acc.video_tokens(F, H, W)
    sac = "sac" in variant  # checkpointed blocks keep their self-attention output
    for m in models:
        n_ckpt = keep = len(m.blocks)
        if "sel" in variant:
            n_ckpt, keep = acc.plan_checkpointing(m, tokens, batch, dev, save_attention=sac)
        acc.set_checkpointing(m, n_ckpt, save_attention=sac, keep_attention=keep)
        if "compile" in variant:
            acc.compile_blocks(m)
    params = [[p for p in m.parameters() if p.requires_grad] for m in models]
    opts = [torch.optim.AdamW(ps, lr=1e-4, fused=dev.type == "cuda") for ps in params]
    lat_f, lat_h, lat_w = (F - 1) // 4 + 1, H // 8, W // 8
    text_dim = cfg["text_dim"]

    def step(i: int) -> float:
        e = i % experts
        m, opt = models[e], opts[e]
        x0 = torch.randn(batch, 16, lat_f, lat_h, lat_w, device=dev)
        noise = torch.randn_like(x0)
        cond = torch.randn(batch, 20, lat_f, lat_h, lat_w, device=dev)
        sigma = torch.rand(batch, device=dev)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        inp = torch.cat([xt, cond], 1).to(dtype)
        txt = torch.randn(batch, text_len, text_dim, device=dev, dtype=dtype)
        ctx = torch.autocast("cuda", torch.bfloat16) if "fp32lora" in variant else torch.autocast("cpu", enabled=False)
        with ctx:
            pred = m(inp, timestep=sigma * 1000, encoder_hidden_states=txt, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    first = None
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        losses.append(step(i))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        if i == 0:
            first = dt
        if i >= warmup:
            times.append(dt)
    med = statistics.median(times)
    flops = acc.flops_per_step(tokens, text_tokens=text_len, recompute_fraction=n_ckpt / len(models[0].blocks))
    if sac:  # the kept self-attention is not recomputed
        flops -= keep * 4 * tokens * tokens * 5120
    out = dict(
        variant=variant, shape=shape, tokens=tokens, experts=experts, batch=batch, device=str(dev),
        gpu=torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        s_per_step=round(med, 4), s_min=round(min(times), 4), s_max=round(max(times), 4), first_step_s=round(first or 0, 2),
        build_s=round(build_s, 2), checkpointed_blocks=n_ckpt, kept_attention=keep if sac else 0,
        tflops_per_s=round(flops * batch / med / 1e12, 1) if not tiny else None,
        peak_alloc_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
        peak_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 2) if dev.type == "cuda" else None,
        loss_finite=all(map(lambda v: v == v and abs(v) < 1e6, losses)),
        torch=torch.__version__,
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="41x512x512,41x480x832")
    ap.add_argument("--variants", default="eager,compile,compile_fp8,compile_fp8_sel")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--experts", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU (smoke test of this script)")
    ap.add_argument("--out", default="")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip rows once this much wall time is spent")
    ap.add_argument("--_one", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._one:
        v, s = a._one.split("@")
        print("RESULT " + json.dumps(run_one(v, s, a.steps, a.warmup, a.tiny, a.experts, a.batch)), flush=True)
        return 0
    rows = []
    start = time.time()
    for shape in a.shapes.split(","):
        for v in a.variants.split(","):
            if time.time() - start > a.budget_s:
                print(f"skipped {v}@{shape}: budget", flush=True)
                continue
            cmd = [sys.executable, __file__, "--_one", f"{v}@{shape}", "--steps", str(a.steps), "--warmup",
                   str(a.warmup), "--experts", str(a.experts), "--batch", str(a.batch)] + (["--tiny"] if a.tiny else [])
            p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                row = dict(variant=v, shape=shape, error=(p.stderr or p.stdout)[-1500:])
            else:
                row = json.loads(line[7:])
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(f"\n{'variant':<22}{'shape':<14}{'s/step':>8}{'first':>8}{'TFLOP/s':>9}{'peak GiB':>9}{'ckpt':>5}")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<22}{r['shape']:<14} ERROR {r['error'].splitlines()[-1][:60]}")
            continue
        print(f"{r['variant']:<22}{r['shape']:<14}{r['s_per_step']:>8}{r['first_step_s']:>8}"
              f"{str(r['tflops_per_s']):>9}{str(r['peak_alloc_gib']):>9}{r['checkpointed_blocks']:>5}")
    project(rows, a.experts)
    return 0


def project(rows: list[dict], experts: int) -> None:
    """The guide's run (3000 steps, both experts, 41 frames, 512/768/1024 equally) from the measured rows.

    Caching is added from the VAE's measured fp32 encode rate (1.0 s for 41x480x832 on an H100, notes):
    every clip is encoded twice per bucket (target + first-frame condition), for a 30-clip dataset.
    """
    by = {r["shape"]: r["s_per_step"] for r in rows if "error" not in r}
    need = ["41x512x512", "41x768x768", "41x1024x1024"]
    if not all(k in by for k in need):
        return
    mean = sum(by[k] for k in need) / 3
    steps_h = 3000 * mean / 3600
    vae_s_per_token = 1.0 / 17160
    tokens = [11 * 32 * 32, 11 * 48 * 48, 11 * 64 * 64]
    cache_h = 30 * 2 * sum(t * vae_s_per_token for t in tokens) / 3600
    compile_h = 3 * 40 / 3600  # one warm-up per bucket shape (both experts share the graph)
    total = steps_h + cache_h + compile_h
    print(f"\nprojection, guide's run (3000 steps, {experts} expert(s) alternating, 41 frames, 512/768/1024 "
          f"equally): {mean:.2f} s/step mean -> {steps_h:.2f} h training + {cache_h:.2f} h caching "
          f"(30 clips) + {compile_h:.2f} h compile = {total:.1f} h  (guide: 35-55 h; target <= 8 h)")


if __name__ == "__main__":
    sys.exit(main())
