"""Data-parallel scaling: samples/s of one full-size Wan 2.2 A14B expert LoRA step on 1 GPU vs N GPUs.

Each rank builds the expert with random weights directly on its GPU (``bench/step.py``'s builder: bf16,
LoRA r16, the variant's levers — default fp8 base + per-block compile + selective checkpointing keeping attention), trains
on its own random latents, and averages the LoRA gradients and the loss with the trainer's own
:mod:`engine.train.distributed` (the all-reduce the real run does).  Both runs go through the trainer's
torchrun launcher (``python -m wanlora.engine.train.torchrun``) with NVLink multicast off.

    python bench/multigpu.py                 # 1 GPU, then all visible GPUs; prints samples/s and the ratio
    python bench/multigpu.py --gpus 4 --shape 41x512x512 --steps 6
    python bench/multigpu.py --tiny          # CPU smoke run: tiny model, gloo, 2 processes

Targets: 2 GPUs ≥ 1.9×, 4 GPUs ≥ 3.7× the samples/s of one.  ``--out FILE`` appends the JSON lines.
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

TARGETS = {2: 1.9, 4: 3.7, 8: 7.2}


def worker(a: argparse.Namespace) -> int:
    """One rank: build, warm up, time ``a.steps`` steps; rank 0 prints ``RESULT {json}``."""
    import torch
    from wanlora.engine.train import acceleration as acc
    from wanlora.engine.train import distributed

    from bench.step import TINY, build_expert

    ctx = distributed.init(torch.device("cpu") if a.tiny else None)
    dev = ctx.device
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    F, H, W = (int(v) for v in a.shape.split("x"))
    text_len, text_dim = (16, TINY["text_dim"]) if a.tiny else (512, 4096)
    torch.manual_seed(0)  # the same LoRA init on every rank; the data below differs per rank
    t0 = time.perf_counter()
    m = build_expert(a.variant, dev, dtype, a.tiny, rank=a.rank)
    build_s = time.perf_counter() - t0
    tokens = acc.video_tokens(F, H, W)
    n_ckpt = len(m.blocks)
    sac = "sac" in a.variant
    if "sel" in a.variant:
        n_ckpt, keep = acc.plan_checkpointing(m, tokens, a.batch, dev, save_attention=sac)
        acc.set_checkpointing(m, n_ckpt, save_attention=sac, keep_attention=keep)
    else:
        acc.set_checkpointing(m, n_ckpt)
    if "compile" in a.variant:
        acc.compile_blocks(m)
    params = [p for p in m.parameters() if p.requires_grad]
    distributed.broadcast_params(ctx, params)
    opt = torch.optim.AdamW(params, lr=1e-4, fused=dev.type == "cuda")
    gen = torch.Generator(dev).manual_seed(1000 + ctx.rank)
    lat = (a.batch, 16, (F - 1) // 4 + 1, H // 8, W // 8)

    def step() -> float:
        x0 = torch.randn(lat, generator=gen, device=dev)
        noise = torch.randn(lat, generator=gen, device=dev)
        cond = torch.randn((a.batch, 20, *lat[2:]), generator=gen, device=dev)
        sigma = torch.rand(a.batch, generator=gen, device=dev)
        s = sigma.view(-1, 1, 1, 1, 1)
        inp = torch.cat([(1 - s) * x0 + s * noise, cond], 1).to(dtype)
        txt = torch.randn(a.batch, text_len, text_dim, generator=gen, device=dev).to(dtype)
        pred = m(inp, timestep=sigma * 1000, encoder_hidden_states=txt, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())
        loss.backward()
        distributed.average_gradients(ctx, params)
        mean = distributed.mean_value(ctx, loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(mean)

    times, losses = [], []
    for i in range(a.warmup + a.steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        distributed.barrier(ctx)  # every rank starts the step together: time the slowest rank's step
        t = time.perf_counter()
        losses.append(step())
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    if ctx.is_main:
        out = dict(
            world=ctx.world_size, variant=a.variant, shape=a.shape, batch=a.batch, rank=a.rank,
            device=str(dev), gpu=torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
            s_per_step=round(med, 4), s_min=round(min(times), 4), s_max=round(max(times), 4),
            samples_per_s=round(ctx.world_size * a.batch / med, 4), build_s=round(build_s, 2),
            checkpointed_blocks=n_ckpt, loss_finite=all(v == v and abs(v) < 1e6 for v in losses),
            peak_alloc_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
            torch=torch.__version__,
        )
        print("RESULT " + json.dumps(out), flush=True)
    distributed.shutdown(ctx)
    return 0


def launch(a: argparse.Namespace, nproc: int) -> dict:
    """Run :func:`worker` on ``nproc`` processes through the trainer's torchrun launcher."""
    from wanlora.engine.config.launch import CPU_PROCS_ENV, child_env

    gpus = [] if a.tiny else list(range(nproc))
    env = child_env(os.environ, gpus=[a.visible[i] for i in gpus])
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if a.tiny:
        env[CPU_PROCS_ENV] = str(nproc)
    cmd = [sys.executable, "-m", "wanlora.engine.train.torchrun", "--standalone", "--nproc-per-node", str(nproc),
           str(Path(__file__).resolve()), "--_worker", "--shape", a.shape, "--variant", a.variant,
           "--steps", str(a.steps), "--warmup", str(a.warmup), "--batch", str(a.batch), "--rank", str(a.rank)]
    cmd += ["--tiny"] if a.tiny else []
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return dict(world=nproc, error=(p.stderr or p.stdout)[-3000:], rc=p.returncode)
    row = json.loads(line[7:])
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def visible_gpus() -> list[str]:
    """Physical indices this process may use (CUDA_VISIBLE_DEVICES, else every GPU NVML sees)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd:
        return [g for g in cvd.split(",") if g.strip()]
    from wanlora.engine.config.gpu import detect_gpus

    return [str(g.index) for g in detect_gpus()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=0, help="N for the scaled run (default: all visible GPUs)")
    ap.add_argument("--shape", default="41x512x512", help="frames x height x width")
    ap.add_argument("--variant", default="compile_fp8_sel_sac", help="bench/step.py variant (levers in the name)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1, help="per-GPU batch")
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank")
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU over gloo (smoke test)")
    ap.add_argument("--skip-single", action="store_true", help="only the N-GPU run")
    ap.add_argument("--out", default="")
    ap.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._worker:
        return worker(a)
    if a.tiny:
        a.visible, n = [], a.gpus or 2
        if a.shape == ap.get_default("shape"):
            a.shape = "5x32x32"
        if a.variant == ap.get_default("variant"):  # fp8 and compile are GPU levers (minutes to compile on a CPU)
            a.variant = "sel"
    else:
        a.visible = visible_gpus()
        n = a.gpus or len(a.visible)
        if n < 2 or n > len(a.visible):
            print(f"need at least 2 visible GPUs for the scaled run (see {len(a.visible)}; --gpus {n})")
            return 2
    rows = [] if a.skip_single else [launch(a, 1)]
    rows.append(launch(a, n))
    for r in rows:
        print(json.dumps(r), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(r) + "\n")
    if any("error" in r for r in rows):
        return 1
    print(f"\n{'GPUs':>5}{'s/step':>9}{'samples/s':>11}{'peak GiB':>10}")
    for r in rows:
        print(f"{r['world']:>5}{r['s_per_step']:>9}{r['samples_per_s']:>11}{str(r['peak_alloc_gib']):>10}")
    if len(rows) == 2:
        ratio = rows[1]["samples_per_s"] / rows[0]["samples_per_s"]
        target = TARGETS.get(n)
        verdict = ""
        if not a.tiny and target is not None:
            verdict = f" (target ≥ {target:.1f}×: {'met' if ratio >= target else 'MISSED'})"
        print(f"scaling {n} GPUs / 1: {ratio:.2f}×{verdict}")
        print("SCALING " + json.dumps({"gpus": n, "ratio": round(ratio, 3), "target": target}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
