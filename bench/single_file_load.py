"""Load time and peak host RAM of one Wan 2.2 A14B expert through the trainer's loader, from the two places users
keep it: a ComfyUI fp8-scaled single file and a diffusers folder — then one LoRA step on it.

For each case the files are written first (random full-size weights, streamed: one tensor in memory; no
network anywhere), dropped from the page cache (``posix_fadvise``, so the load reads the disk as a first load
does; ``--warm`` keeps them cached), then a fresh process loads them as ``Trainer.setup`` does —
``load_parts`` with the job's files and the same staging decision (``fp8_files_direct``), ``add_lora``, then
``quantize_and_place`` — while a sampler records its peak resident memory.  Files are deleted after their case
(``--keep`` leaves them), so the disk never holds more than one case (29 GB for the bf16 folder).

    python bench/single_file_load.py --dir /workspace/sfl          # GPU: both cases, fp8 compute (the 80/141 GB tiers)
    python bench/single_file_load.py --dir /workspace/sfl --quant none   # bf16 base
    python bench/single_file_load.py --tiny                        # CPU smoke run of the same code (tests use it)

One JSON line per case: write_s, load_parts_s, place_s, load_s (both), peak_rss_gib (incl. file pages mapped
from the safetensors), peak_anon_gib (private memory), gpu_alloc_gib, fp8_linears, step_s, lora_grads_finite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CASES = ("comfyui_fp8", "diffusers")
TINY = {"num_attention_heads": 2, "attention_head_dim": 16, "ffn_dim": 64, "num_layers": 2, "text_dim": 32}


class PeakMemory:
    """Peak VmRSS / RssAnon of this process, sampled from /proc every 20 ms on a thread."""

    def __init__(self) -> None:
        self.rss = self.anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> tuple[int, int]:
        rss = anon = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) * 1024
        return rss, anon

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, anon = self.now()
            self.rss, self.anon = max(self.rss, rss), max(self.anon, anon)
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        rss, anon = self.now()
        self.rss, self.anon = max(self.rss, rss), max(self.anon, anon)


def _gib(n: float) -> float:
    return round(n / 2**30, 2)


def _drop_cache(paths: list[Path]) -> None:
    """Evict the just-written files from the page cache (clean pages after the writer's fsync)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _configs(root: Path, tiny: bool) -> dict:
    """A model folder with the Wan 2.2 I2V A14B configs (the project's bundled copy; tiny sizes with ``--tiny``)."""
    from wanlora.engine.model import weight_files as wf

    shutil.copytree(wf.bundled_config_dir(), root, dirs_exist_ok=True)
    cfg = wf.config_for(wf.HIGH, root)
    if tiny:
        from wanlora.engine.model.tiny import VAE_CONFIG

        cfg = {**cfg, **TINY}
        (root / "transformer" / "config.json").write_text(json.dumps(cfg))
        (root / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan", **VAE_CONFIG},
                                                             default=list))
    return cfg


def write_case(case: str, d: Path, tiny: bool) -> tuple[Path, dict, list[Path]]:
    """The model folder (+ the ComfyUI file) of one case; returns (folder, expert config, files written)."""
    import torch
    from diffusers import AutoencoderKLWan
    from wanlora.engine.model import single_file as sf
    from wanlora.engine.model import weight_files as wf

    root = d / f"model_{case}"
    cfg = _configs(root, tiny)
    with torch.device("meta"):
        vae = AutoencoderKLWan.from_config({k: v for k, v in wf.config_for(wf.VAE, root).items()
                                            if not k.startswith("_")})
    vae_specs = [(k, torch.bfloat16, tuple(v.shape)) for k, v in vae.state_dict().items()]
    vae_file = sf.write_safetensors_streaming(
        root / "vae" / "diffusion_pytorch_model.safetensors", vae_specs,
        lambda k: torch.full(dict((n, s) for n, _d, s in vae_specs)[k], 0.01, dtype=torch.bfloat16))
    written = [vae_file]
    if case == "comfyui_fp8":
        path = d / "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
        written.append(sf.write_random_expert(path, cfg, precision="fp8_scaled", expert=wf.HIGH, fast=True))
    else:  # diffusers' own layout: bf16 shards of ≤5 GB + index, as Wan-AI/Wan2.2-I2V-A14B-Diffusers has them
        index = sf.write_random_expert(root / "transformer" / "diffusion_pytorch_model.safetensors", cfg,
                                       layout="diffusers", precision="bf16", fast=True, max_shard_bytes=5 * 10**9)
        written += wf.shard_files(index)
    return root, cfg, written


def load_case(case: str, d: Path, quant: str, tiny: bool, frames: int, size: int) -> dict:
    """In a fresh process: the trainer's load of the high-noise expert (Trainer.setup + _prepare_expert)."""
    import torch
    from wanlora.engine.model import weight_files as wf
    from wanlora.engine.model.load import load_parts
    from wanlora.engine.model.lora import add_lora
    from wanlora.engine.model.part_sources import fp8_files_direct
    from wanlora.engine.model.quant import quantize_and_place

    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    root = d / f"model_{case}"
    files = {wf.HIGH: d / "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"} if case == "comfyui_fp8" else {}
    if device.type != "cuda":
        quant = "none"  # fp8/nf4 need CUDA (the trainer refuses them elsewhere)
    stage_on_cpu = quant != "none" and not fp8_files_direct(files, [wf.HIGH], quant, False)
    extra = {"files": files, "transformer_quant": quant} if files else {}
    mem = PeakMemory()
    rss0 = PeakMemory.now()
    t0 = time.perf_counter()
    parts = load_parts(str(root), [wf.HIGH], dtype=dtype, device=device, vae_dtype=torch.float32,
                       text_encoder=False, expert_device="cpu" if stage_on_cpu else None, **extra)
    if device.type == "cuda":
        torch.cuda.synchronize()
    load_parts_s = time.perf_counter() - t0
    model = parts.experts[wf.HIGH]
    t1 = time.perf_counter()
    params = add_lora(model, 16, 16, "attn+ffn", dtype=torch.float32)  # fp32 masters, as the trainer
    if quant != "none":
        quantize_and_place(model, quant, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    place_s = time.perf_counter() - t1
    mem.stop()
    fp8 = sum(type(m).__name__ == "Fp8Linear" for m in model.modules())
    model.train()
    cfg = model.config
    x = torch.randn(1, 36, frames, size, size, device=device, dtype=dtype)
    text = torch.randn(1, 512, cfg.text_dim, device=device, dtype=dtype)
    t2 = time.perf_counter()
    out = model(x, torch.tensor([950.0], device=device), text, return_dict=False)[0]
    out.float().pow(2).mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = time.perf_counter() - t2
    ok = all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in params)
    return {"case": case, "quant": quant, "device": str(device), "staged_on_cpu": stage_on_cpu,
            "load_parts_s": round(load_parts_s, 2), "place_s": round(place_s, 2),
            "load_s": round(load_parts_s + place_s, 2), "host_rss_before_gib": _gib(rss0[0]),
            "peak_rss_gib": _gib(mem.rss), "peak_anon_gib": _gib(mem.anon), "fp8_linears": fp8,
            "gpu_alloc_gib": _gib(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None,
            "step_s": round(step_s, 2), "lora_grads_finite": ok}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/wanlora_bench_files")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    ap.add_argument("--quant", default="fp8", choices=["fp8", "none"],
                    help="quantization.transformer of the job (fp8: the 80/141 GB tiers; none: bf16 base)")
    ap.add_argument("--tiny", action="store_true", help="small config on the CPU (smoke test)")
    ap.add_argument("--warm", action="store_true", help="load from the page cache (skip the eviction)")
    ap.add_argument("--keep", action="store_true", help="keep the written files")
    ap.add_argument("--frames", type=int, default=3, help="latent frames of the step's input")
    ap.add_argument("--size", type=int, default=64, help="latent H=W of the step's input")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    d = Path(args.dir)
    if args.child:
        print(json.dumps(load_case(args.child, d, args.quant, args.tiny, args.frames, args.size)), flush=True)
        return 0
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here needs the network; make sure nothing tries
    d.mkdir(parents=True, exist_ok=True)
    bad = 0
    for case in args.cases.split(","):
        if case not in CASES:
            print(f"unknown case {case!r}; expected {', '.join(CASES)}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        _root, _cfg, written = write_case(case, d, args.tiny)
        write_s = time.perf_counter() - t0
        if not args.warm:
            _drop_cache(written)
        cmd = [sys.executable, __file__, "--child", case, "--dir", str(d), "--quant", args.quant,
               "--frames", str(args.frames), "--size", str(args.size)] + (["--tiny"] if args.tiny else [])
        r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        row = json.loads(lines[-1]) if r.returncode == 0 and lines else {
            "case": case, "error": (r.stderr or r.stdout)[-2000:]}
        row.update(write_s=round(write_s, 1), file_gib=_gib(sum(p.stat().st_size for p in written)),
                   page_cache="warm" if args.warm else "evicted")
        print(json.dumps(row), flush=True)
        bad += int("error" in row or not row.get("lora_grads_finite"))
        if not args.keep:
            shutil.rmtree(d / f"model_{case}", ignore_errors=True)
            for p in written:
                p.unlink(missing_ok=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
