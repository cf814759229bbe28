"""Do the small-GPU tiers fit?  Peak VRAM and step time of full-size experts under a hard memory cap.

- ``tier24``: the 24 GB tier's own settings — nf4 base weights, both experts alternating with
  ``low_vram`` (the idle expert waits in CPU memory), cached latents/embeddings (random here), 41×512²,
  gradient checkpointing — on a big GPU capped to 24 GiB with
  ``torch.cuda.set_per_process_memory_fraction``.  Also the measured cost of one expert switch.
- ``tier12``: the 12 GB tier — fp8 base streamed block by block from pinned CPU memory
  (``engine.model.offload.BlockStreamer``), 21×512², capped to 12 GiB — against the same config resident.

    python bench/memory_tiers.py --which tier24,tier12 [--out FILE]

Random weights (values do not change memory or speed).  One JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from wanlora.engine.config.launch import use_trainer_env  # noqa: E402

use_trainer_env()  # the trainer's allocator setting (expandable segments) and NVLink multicast off
sys.path.insert(0, str(ROOT / "bench"))

GIB = 2**30


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def _train_steps(models, opts, shape, n_steps, switch_every, dev, on_switch=None, warmup=2, text=(512, 4096)):
    import torch

    F, H, W = shape
    lat = (1, 16, (F - 1) // 4 + 1, H // 8, W // 8)
    times, switch_times, losses = [], [], []
    active = None
    for i in range(n_steps):
        e = (i // switch_every) % len(models)
        _sync(dev)
        t = time.perf_counter()
        switched = active is not None and e != active
        if on_switch is not None and e != active:
            on_switch(e)
        active = e
        m, opt = models[e], opts[e]
        x0 = torch.randn(lat, device=dev)
        noise = torch.randn_like(x0)
        cond = torch.randn(1, 20, *lat[2:], device=dev)
        s = torch.rand(1, device=dev).view(-1, 1, 1, 1, 1)
        dt_ = torch.bfloat16 if dev.type == "cuda" else torch.float32
        inp = torch.cat([(1 - s) * x0 + s * noise, cond], 1).to(dt_)
        txt = torch.randn(1, *text, device=dev, dtype=dt_)
        pred = m(inp, timestep=s.view(-1) * 1000, encoder_hidden_states=txt, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        _sync(dev)
        dt = time.perf_counter() - t
        if i >= warmup:
            (switch_times if switched else times).append(dt)
    return times, switch_times, losses


def tier24(steps: int) -> dict:
    import torch
    from step import build_expert
    from wanlora.engine.model.quant import quantize_and_place
    from wanlora.engine.train import acceleration as acc

    dev = torch.device("cuda")
    shape = (41, 512, 512)
    models = []
    for _ in range(2):
        m = build_expert("bf16", dev, torch.bfloat16)
        quantize_and_place(m, "nf4", dev)
        acc.set_checkpointing(m, len(m.blocks))
        if models:  # the first expert waits on the CPU (low_vram)
            models[0].to("cpu")
        torch.cuda.empty_cache()
        models.append(m)
    models[1].to("cpu")
    torch.cuda.empty_cache()
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for m in models]
    total = torch.cuda.get_device_properties(dev).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 24 * GIB / total), 0)
    torch.cuda.reset_peak_memory_stats(dev)
    swap_s: list[float] = []

    def on_switch(e: int) -> None:
        t = time.perf_counter()
        for j, m in enumerate(models):
            if j != e:
                m.to("cpu")
        torch.cuda.empty_cache()
        models[e].to(dev)
        torch.cuda.synchronize()
        swap_s.append(time.perf_counter() - t)

    switch_every = 3
    times, sw, losses = _train_steps(models, opts, shape, steps, switch_every, dev, on_switch)
    med = statistics.median(times)
    swap = statistics.median(swap_s[1:]) if len(swap_s) > 1 else None
    return dict(bench="tier24", gpu=torch.cuda.get_device_name(), cap_gib=24, shape="41x512x512",
                quant="nf4", experts=2, low_vram=True, s_per_step=round(med, 3),
                switch_s=round(swap, 2) if swap else None,
                overhead_at_switch_every_10=round(swap / 10 / med, 3) if swap else None,
                peak_alloc_gib=round(torch.cuda.max_memory_allocated(dev) / GIB, 2),
                peak_reserved_gib=round(torch.cuda.max_memory_reserved(dev) / GIB, 2),
                loss_finite=all(v == v for v in losses), steps=steps)


def tier12(steps: int, offload: bool, tiny: bool = False) -> dict:
    import torch
    from step import build_expert
    from wanlora.engine.model.offload import BlockStreamer
    from wanlora.engine.train import acceleration as acc

    dev = torch.device("cpu" if tiny else "cuda")
    shape = (9, 64, 64) if tiny else (21, 512, 512)
    m = build_expert("fp8", dev, torch.float32 if tiny else torch.bfloat16, tiny=tiny)
    acc.set_checkpointing(m, len(m.blocks))
    streamer = None
    if offload:
        streamer = BlockStreamer(m, dev)
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, fused=not tiny)]
    if tiny:
        times, _sw, losses = _train_steps([m], opts, shape, steps, 10**9, dev, text=(16, 32))
        return dict(bench="tier12_tiny", s_per_step=statistics.median(times), loss_finite=all(v == v for v in losses))
    torch.cuda.empty_cache()
    if offload:
        total = torch.cuda.get_device_properties(dev).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, 12 * GIB / total), 0)
    torch.cuda.reset_peak_memory_stats(dev)
    times, _sw, losses = _train_steps([m], opts, shape, steps, 10**9, dev)
    return dict(bench="tier12" + ("_offload" if offload else "_resident"), gpu=torch.cuda.get_device_name(),
                cap_gib=12 if offload else None, shape="21x512x512", quant="fp8", experts=1,
                layer_offloading=offload, s_per_step=round(statistics.median(times), 3),
                streamed_gib_per_pass=round(streamer.bytes_per_pass / GIB, 2) if streamer else None,
                peak_alloc_gib=round(torch.cuda.max_memory_allocated(dev) / GIB, 2),
                peak_reserved_gib=round(torch.cuda.max_memory_reserved(dev) / GIB, 2),
                loss_finite=all(v == v for v in losses), steps=steps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--which", default="tier24,tier12")
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--out", default="")
    ap.add_argument("--_one", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._one:
        fn = {"tier24": lambda: tier24(a.steps), "tier12_offload": lambda: tier12(a.steps, True),
              "tier12_resident": lambda: tier12(a.steps, False),
              "tier12_tiny": lambda: tier12(a.steps, True, tiny=True)}[a._one]
        print("RESULT " + json.dumps(fn()), flush=True)
        return 0
    jobs = []
    for w in a.which.split(","):
        jobs += ["tier12_resident", "tier12_offload"] if w == "tier12" else [w]  # tier12_tiny: CPU smoke
    for j in jobs:
        p = subprocess.run([sys.executable, __file__, "--_one", j, "--steps", str(a.steps)], capture_output=True,
                           text=True)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
        row = json.loads(line[7:]) if line else dict(bench=j, error=(p.stderr or p.stdout)[-2000:])
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
