"""Peak VRAM and wall time of a job, before any GPU is touched (pure arithmetic, no torch).

Memory (GiB) = resident expert weights + LoRA/optimizer + activations + text encoder/VAE if resident.
The constants are measured on an H100 with diffusers + peft (shared/notes/baseline-h100-step.md and
fp8-h100-step.md): one bf16 expert 26.8 GiB, fp8 13.8, nf4 ≈ 7.5; with gradient checkpointing the peak
grows 0.69 GiB per 1000 video tokens at batch 1 (9.2 without); tokens = ((F-1)//4+1)·(H/16)·(W/16).

Time: the FLOPs of one step (the notes' formula) divided by the throughput measured at that token count
(eager bf16 H100), scaled for compile, quantisation, the GPU and the job's options; or, when
``presets/calibration.toml`` exists, by the throughput the benchmark suite measured there.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wanlora.engine.config.schema import Job, expert_plan
from wanlora.engine.train import memory_plan as mp

WEIGHTS_GIB = {"none": 26.8, "fp8": 13.8, "nf4": 8.0}  # one expert incl. its unquantised embeddings/norms
TE_GIB = {"none": 10.6, "fp8": 5.6, "nf4": 3.2}  # UMT5-XXL encoder
VAE_GIB = 0.25
RECOVERY_ADAPTER_GIB = 0.3  # per quantised expert
OFFLOAD_RESIDENT_GIB = 1.2  # embeddings + two blocks in flight while layer_offloading streams the rest
# An nf4 expert's step holds less than a bf16/fp8 one fully checkpointed: 16.56 GiB allocated at 41x512² on the
# 24 GB tier (one 8.0 GiB nf4 expert + 2.57 GiB of fp32 LoRA/AdamW for both experts; H100, 2026-12-07,
# bench/results/2026-12-07-tier-matrix/call1), so 0.53 GiB per 1000 tokens held, bitsandbytes' buffers included.
NF4_HELD_FLOOR_GIB_PER_KTOK = 0.53
# The memory each tier's card offers (NVML total, GiB): what the trainer plans against on that card.
CARD_GIB = {12: 12.0, 24: 24.0, 32: 31.8, 48: 47.5, 80: 79.2, 141: 139.8}
# LoRA weight + its gradient + AdamW's two moments, by (optimizer, advanced.lora_master_dtype): fp32 masters
# 4 + 4 + 2×4, plus the bf16 copy of each weight a forward casts for its matmul and autograd keeps until backward
# (≤ 2); bf16 masters 2 + 2 + 2×2; 8-bit AdamW's moments are 2 bytes together.
OPT_BYTES_PER_PARAM = {("adamw", "fp32"): 18.0, ("adamw8bit", "fp32"): 12.0,
                       ("adamw", "bf16"): 8.0, ("adamw8bit", "bf16"): 6.0}
EMA_BYTES_PER_PARAM = 2.0
ALLOC_OVERHEAD = 1.08  # allocator fragmentation over max_memory_allocated: the margin "fits" keeps
RESERVED_OVER_ALLOC = 1.035  # what the caching allocator reserved over the peak allocated in the H200 trials
# The activation figures hold up to the largest bucket measured to train: 86 016 tokens (81 frames at 1024²,
# both experts in fp8 on an H200, 43.45 s/step; BENCHMARKS.md §0b).  Past this size the estimate is a lower
# bound.  (Until every compiled checkpointed block ran under an explicit policy, that bucket ran out of memory.)
MEASURED_TOKENS = 86016
CUDA_CONTEXT_GIB = 0.5

# Wan 2.2 A14B expert: d=5120, ffn=13824, 40 blocks, 512 text tokens.
D, FFN, LAYERS, TEXT_TOKENS = mp.D, mp.FFN, mp.N_BLOCKS, mp.TEXT_TOKENS
LORA_PARAMS_PER_RANK = {  # per expert: attn1+attn2 q,k,v,o = 8 d×d; FFN in/out
    "attn+ffn": LAYERS * (8 * 2 * D + 2 * (D + FFN)),
    "attn": LAYERS * 8 * 2 * D,
    "ffn": LAYERS * 2 * (D + FFN),
}

# Eager bf16 throughput (TFLOP/s) on an H100 by video tokens at batch 1, GC on (baseline notes).
H100_TFLOPS = ((3072, 326.0), (11264, 410.0), (17160, 422.0), (21504, 441.0), (25344, 451.0),
               (32760, 455.0), (45056, 481.0))
COMPILE_FACTOR = 0.78  # per-block torch.compile: -20..-23 % step time
QUANT_TIME = {  # (eager, compiled) step time factor vs bf16
    "none": (1.0, 1.0),
    "fp8": (1.097, 1.013),  # measured (weight-only fp8 dequantises per matmul)
    # 41x512², every block checkpointed, FA4 (H100 under a 24 GiB cap, 2026-12-08): eager 3.12 s, compiled 2.31 s,
    # against 2.29 / 1.80 s that the H100's bf16-normalised trial rows give at that plan (the compile factor
    # applies on top of the compiled value)
    "nf4": (1.36, 1.28),
}
# bf16 dense throughput relative to an H100 (vendor peak ratios; substring of the NVML name).
GPU_SPEED = (("H200", 1.03), ("H100", 1.0), ("GH200", 1.05), ("B200", 2.2), ("A100", 0.32),
             ("L40S", 0.37), ("RTX 6000 Ada", 0.37), ("L40", 0.18), ("A6000", 0.16), ("5090", 0.21),
             ("4090", 0.17), ("3090", 0.072), ("4080", 0.10), ("4070", 0.06), ("3060", 0.026))
TIER_GPU = {12: ("RTX 3060-class GPU", 0.026), 24: ("RTX 4090-class GPU", 0.17), 32: ("RTX 5090-class GPU", 0.21),
            48: ("L40S/A6000-class GPU", 0.25), 80: ("H100", 1.0), 141: ("H200", 1.03)}
PCIE_GIB_S = 12.0  # pinned host->device copies when low_vram swaps experts (not yet measured, 2026-12-08)
VAE_S_PER_KTOK = 0.028  # uncached VAE encode on an H100-class GPU (0.92 s for 81x480x832)
OFFLOAD_TIME_FACTOR = 2.0  # guide: layer offloading roughly doubles step time
# The guide's ai-toolkit wall times on an H100 (41 frames, mixed 512/768/1024): steps -> (low h, high h).
GUIDE_HOURS = {1000: (12, 18), 1500: (18, 27), 2000: (24, 36), 3000: (35, 55)}


video_tokens = mp.video_tokens  # one definition: the planner's (latent frames × H/16 × W/16)


def lora_params(rank: int, modules: str = "attn+ffn") -> int:
    return LORA_PARAMS_PER_RANK[modules] * rank


def experts_resident(job: Job) -> int:
    trained = len(job.multistage.trained())
    return 1 if job.model.low_vram else max(1, trained)


@dataclass
class MemoryEstimate:
    """Peak VRAM of the largest bucket; ``need_gib`` adds allocator overhead and the CUDA context."""

    peak_gib: float
    need_gib: float
    parts: dict[str, float]
    worst: str  # which dataset/bucket sets the peak, e.g. "datasets[0] 1024x1024x41"
    tokens: int
    dataset: int = -1  # index of the dataset whose bucket sets the peak (-1: no datasets)
    plan: mp.CheckpointPlan | None = None  # the trainer's checkpoint plan for that bucket
    budget_gib: float | None = None  # the card it was planned for (None: unknown, every block checkpointed)
    largest: str = ""  # the bucket with the most tokens (under a plan it need not set the peak)
    largest_tokens: int = 0

    @property
    def reserved_gib(self) -> float:
        """The peak the trainer's allocator is expected to reserve (what ``wanlora trial`` reports)."""
        return round(self.peak_gib * RESERVED_OVER_ALLOC, 1)

    @property
    def beyond_measured(self) -> bool:
        """The largest bucket is past what has been measured to fit: the estimate is only a lower bound."""
        return max(self.tokens, self.largest_tokens) > MEASURED_TOKENS


def _static_parts(job: Job) -> dict[str, float]:
    """What sits on the GPU whatever the bucket: resident weights, LoRA + optimizer, an uncached TE/VAE."""
    q = job.quantization.transformer
    n = experts_resident(job)
    parts: dict[str, float] = {}
    if job.model.layer_offloading:
        parts["expert weights (streamed from CPU)"] = OFFLOAD_RESIDENT_GIB
    else:
        parts[f"{n} expert(s), {q if q != 'none' else 'bf16'}"] = n * WEIGHTS_GIB[q]
    if q != "none" and job.quantization.recovery_adapter:
        parts["recovery adapter"] = n * RECOVERY_ADAPTER_GIB
    per_param = (OPT_BYTES_PER_PARAM[(job.training.optimizer, job.advanced.lora_master_dtype)]
                 + (EMA_BYTES_PER_PARAM if job.training.ema else 0))
    # optimizer state stays on the GPU even when low_vram parks the idle expert's weights on the CPU
    ranks = [expert_plan(job, e).rank for e in job.multistage.trained()] or [job.target.rank]
    parts["LoRA + optimizer"] = sum(lora_params(r, job.target.modules) for r in ranks) * per_param / 2**30
    t = job.training
    # the trainer frees the text encoder once every prompt is cached, and the VAE once every clip is
    if not (t.cache_text_embeddings or t.unload_text_encoder):
        parts[f"text encoder ({job.quantization.text_encoder})"] = TE_GIB[job.quantization.text_encoder]
    if not (job.datasets and all(d.cache_latents for d in job.datasets)):
        parts["VAE"] = VAE_GIB
    return parts


def bucket_plan(job: Job, tokens: int, budget_gib: float | None) -> mp.CheckpointPlan:
    """The checkpoint plan the trainer will make for this bucket on a card of ``budget_gib`` (every block
    checkpointed when the card is unknown, with offloading, or with ``gradient_checkpointing`` off: none)."""
    batch = job.training.batch_size
    if not job.training.gradient_checkpointing:
        return mp.CheckpointPlan(0, 0)
    if budget_gib is None or job.model.layer_offloading:
        return mp.CheckpointPlan(mp.N_BLOCKS, 0)
    static = sum(_static_parts(job).values()) + CUDA_CONTEXT_GIB
    free = (budget_gib - static) * mp.GIB
    return mp.plan_for_free(mp.N_BLOCKS, tokens, batch, free, budget_gib * mp.GIB, save_attention=True)


def _bucket_peak(job: Job, tokens: int, budget_gib: float | None) -> tuple[dict[str, float], mp.CheckpointPlan]:
    parts = _static_parts(job)
    plan = bucket_plan(job, tokens, budget_gib)
    floor = NF4_HELD_FLOOR_GIB_PER_KTOK * mp.GIB if job.quantization.transformer == "nf4" else None
    act = mp.activation_bytes(plan, mp.N_BLOCKS, tokens, job.training.batch_size, held_floor_per_1k=floor) / mp.GIB
    kept = mp.N_BLOCKS - plan.checkpointed
    parts[f"activations ({tokens} tokens x batch {job.training.batch_size}; {kept} of {mp.N_BLOCKS} blocks kept, "
          f"{plan.keep_attention} attention outputs)"] = act
    return parts, plan


def buckets(job: Job) -> list[tuple[int, int, int, int]]:
    """(dataset index, resolution, num_frames, tokens) of every bucket size the job trains on."""
    out = []
    for i, d in enumerate(job.datasets):
        for r in d.resolutions:
            out.append((i, r, d.num_frames, video_tokens(d.num_frames, r, r)))
    return out or [(-1, 512, 41, video_tokens(41, 512, 512))]


def card_gib(tier: int | None, detected_total_gib: float | None = None) -> float | None:
    """The memory the trainer will plan against: the GPU's (or a ``--vram-gib`` cap), else the tier's card."""
    if detected_total_gib is not None:
        return detected_total_gib
    return CARD_GIB.get(tier) if tier is not None else None


def peak_vram(job: Job, budget_gib: float | None = None) -> MemoryEstimate:
    """Estimated peak VRAM (GiB) over all buckets; the largest bucket decides.

    With ``budget_gib`` (the card's memory) each bucket gets the checkpoint plan the trainer makes there, so
    the activations fill the card as the trainer's do; without it every block counts as checkpointed."""
    rows = []
    for i, res, frames, tokens in buckets(job):
        parts, plan = _bucket_peak(job, tokens, budget_gib)
        where = f"datasets[{i}] {res}x{res}x{frames}" if i >= 0 else f"{res}x{res}x{frames}"
        rows.append((sum(parts.values()), tokens, where, i, parts, plan))
    peak, tokens, where, i, parts, plan = max(rows, key=lambda r: (r[0], r[1]))
    big = max(rows, key=lambda r: r[1])
    return MemoryEstimate(round(peak, 1), round(peak * ALLOC_OVERHEAD + CUDA_CONTEXT_GIB, 1),
                          {k: round(v, 2) for k, v in parts.items()}, where, tokens, i, plan=plan,
                          budget_gib=budget_gib, largest=big[2], largest_tokens=big[1])


@dataclass
class LadderStep:
    """One rung of the guide's OOM ladder, applied on top of the ones before it."""

    key: str
    change: str
    peak_gib: float
    need_gib: float


def oom_ladder(job: Job, budget_gib: float | None = None) -> list[LadderStep]:
    """The guide's OOM ladder tailored to ``job``: drop 1024 → frames 41→33→21 → batch 1 → low_vram →
    nf4 → layer_offloading; each rung with the estimated peak after it (stops once it fits)."""
    j = job.model_copy(deep=True)
    steps: list[LadderStep] = []

    def rung(key: str, change: str) -> bool:
        est = peak_vram(j, budget_gib)
        steps.append(LadderStep(key, change, est.peak_gib, est.need_gib))
        return budget_gib is not None and est.need_gib <= budget_gib

    if not _ladder_shrink_data(j, rung):
        _ladder_lighten_model(j, rung)
    return steps


def _ladder_shrink_data(j: Job, rung: Callable[[str, str], bool]) -> bool:
    """The data rungs first (1024 bucket, then fewer frames): they cost the least; True once it fits."""
    for i, d in enumerate(j.datasets):
        if max(d.resolutions) > 768:
            d.resolutions = [r for r in d.resolutions if r <= 768] or [768]
            if rung(f"datasets[{i}].resolutions", f"drop the 1024 bucket: resolutions = {d.resolutions}"):
                return True
    for target in (41, 33, 21):
        for i, d in enumerate(j.datasets):
            if d.num_frames > target:
                d.num_frames = target
                if rung(f"datasets[{i}].num_frames", f"num_frames = {target}"):
                    return True
    return False


def _ladder_lighten_model(j: Job, rung: Callable[[str, str], bool]) -> bool:
    """The training/model rungs after the data ones, cheapest first; True once it fits."""
    if j.training.batch_size > 1:
        j.training.batch_size = 1
        if rung("training.batch_size", "batch_size = 1"):
            return True
    if not j.model.low_vram:
        j.model.low_vram = True
        if rung("model.low_vram", "low_vram = true (only the active expert on the GPU)"):
            return True
    if j.quantization.transformer != "nf4":
        j.quantization.transformer = "nf4"
        if rung("quantization.transformer", 'transformer = "nf4"'):
            return True
    if not j.model.layer_offloading:
        j.model.layer_offloading = True
        return rung("model.layer_offloading", "layer_offloading = true (needs about 64 GB of system RAM)")
    return False


def format_ladder(steps: list[LadderStep]) -> str:
    return " → ".join(f"{s.change} (≈{s.need_gib:.0f} GiB)" for s in steps)


# ---- time -------------------------------------------------------------------------------------------


def step_tflop(tokens: int, rank: int = 16, gc: bool = True, batch: int = 1,
               plan: mp.CheckpointPlan | None = None) -> float:
    """TFLOP of one training step of one expert at batch ``batch``: forward, the recompute its checkpoint
    ``plan`` implies (``gc`` without a plan: every block recomputed, or none), backward."""
    frac = (mp.recompute_fraction(plan, mp.N_BLOCKS, tokens, rank=rank) if plan is not None
            else (1.0 if gc else 0.0))
    return batch * mp.flops_per_step(tokens, rank=rank, recompute_fraction=frac) / 1e12


def forward_tflop(tokens: int, rank: int = 16) -> float:
    """TFLOP of one forward pass (a DOP preservation pass, one preview denoising step)."""
    return mp.forward_flops(tokens, rank=rank) / 1e12


def _interp(points: list[tuple[float, float]], x: float) -> float:
    pts = sorted(points)
    if x <= pts[0][0]:
        return pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[-1][1]


def gpu_speed(gpu_name: str | None, tier: int | None) -> tuple[str, float]:
    """(label, bf16 speed relative to an H100) for an NVML name, else the tier's typical GPU."""
    if gpu_name:
        for sub, f in GPU_SPEED:
            if sub.lower() in gpu_name.lower():
                return gpu_name, f
        return gpu_name, 0.3
    if tier in TIER_GPU:
        return TIER_GPU[tier]
    return "H100 (no GPU given)", 1.0


def calibration_path() -> Path:
    from wanlora.engine.config.presets import presets_dir

    return presets_dir() / "calibration.toml"


def load_calibration(path: Path | None = None) -> list[dict[str, Any]]:
    """Measured steps from ``presets/calibration.toml`` (``[[step]]`` rows), or ``[]`` when absent."""
    path = path or calibration_path()
    try:
        with open(path, "rb") as f:
            rows = tomllib.load(f).get("step", [])
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return []
    need = ("gpu", "num_frames", "width", "height", "s_per_step")
    return [r for r in rows if isinstance(r, dict) and all(k in r for k in need) and r["s_per_step"] > 0]


@dataclass
class TimeEstimate:
    s_per_step: float
    hours: float
    gpu: str
    source: str  # "calibration (presets/calibration.toml, N measured steps)" or "built-in ..."
    notes: list[str] = field(default_factory=list)
    buckets: list[BucketTime] = field(default_factory=list)  # per bucket, the job's own order


def _row_plan(r: dict[str, Any]) -> mp.CheckpointPlan | None:
    """The checkpoint plan a calibration row ran under, when it recorded one (older rows: every block)."""
    if "checkpointed_blocks" not in r:
        return None
    return mp.CheckpointPlan(int(r["checkpointed_blocks"]), int(r.get("saved_attention", 0)))


def _calibrated_tflops(rows: list[dict[str, Any]], gpu: str, quant: str, compiled: bool) -> list[tuple[float, float]] | None:
    """Throughput points (tokens, TFLOP/s) measured on ``gpu``, normalised to eager bf16.

    Each row's FLOPs are counted under the checkpoint plan it ran with (and its DOP pass), so a row measured
    with half its blocks kept and a job planned with all of them checkpointed share one throughput curve.
    Rows measured in the job's own settings (quantisation and compile) are used alone where there are any:
    fp8 compute and the attention kernel change the speed by more than the fixed factors say, and
    normalising a row and re-applying the same factors gives that row's time back exactly.  Several rows at
    one token count (repeated runs) count once, at the fastest: what the trainer reaches with its kernels."""
    mine = [r for r in rows if str(r["gpu"]).lower() in gpu.lower() or gpu.lower() in str(r["gpu"]).lower()]
    if not mine:
        return None
    same = [r for r in mine if str(r.get("transformer", "none")) == quant and bool(r.get("compile", False)) == compiled]
    planned = [r for r in same if _row_plan(r) is not None]
    same = planned or same  # rows that recorded their checkpoint plan: their recompute is known, not assumed
    best: dict[float, float] = {}
    for r in same or mine:
        tok = video_tokens(int(r["num_frames"]), int(r["height"]), int(r["width"]))
        rank, batch = int(r.get("rank", 16)), int(r.get("batch_size", 1))
        flops = step_tflop(tok, rank, bool(r.get("gradient_checkpointing", True)), batch, plan=_row_plan(r))
        if r.get("dop"):
            flops = 2 * flops + batch * forward_tflop(tok, rank)
        tf = flops / float(r["s_per_step"])
        rq, rc = str(r.get("transformer", "none")), bool(r.get("compile", False))
        tf *= QUANT_TIME.get(rq, (1.0, 1.0))[int(rc)] * (COMPILE_FACTOR if rc else 1.0)  # back to eager bf16
        best[float(tok)] = max(best.get(float(tok), 0.0), tf)
    return sorted(best.items())


@dataclass
class BucketTime:
    """One bucket's predicted step: seconds, and the checkpoint plan the trainer will use there."""

    tokens: int
    s_per_step: float
    plan: mp.CheckpointPlan


def step_time(job: Job, gpu_name: str | None = None, tier: int | None = None,
              calibration: list[dict[str, Any]] | None = None, budget_gib: float | None = None) -> TimeEstimate:
    """Seconds per optimizer step (averaged over the job's buckets) and total hours on ``gpu_name``.

    ``budget_gib``: the card's memory (default: the tier's card), for the checkpoint plan each bucket gets:
    blocks the plan keeps are not recomputed, so a roomy card steps faster than a tight one."""
    label, speed = gpu_speed(gpu_name, tier)
    if budget_gib is None:
        budget_gib = card_gib(tier)
    rows = load_calibration() if calibration is None else calibration
    compiled = job.advanced.compile
    quant = job.quantization.transformer
    cal = _calibrated_tflops(rows, label, quant, compiled) if rows else None
    curve = cal or [(float(a), b * speed) for a, b in H100_TFLOPS]
    source = (f"calibrated: {calibration_path()} ({len(cal)} measured step(s) on {label})" if cal
              else "built-in numbers (H100 measurements in the notes, scaled to the GPU)")
    notes: list[str] = []
    t = job.training
    weights = [(job.datasets[i].weight / len(job.datasets[i].resolutions) if i >= 0 else 1.0, tok)
               for i, _, _, tok in buckets(job)]
    total_w = sum(w for w, _ in weights)
    qf = QUANT_TIME[quant][int(compiled)] * (COMPILE_FACTOR if compiled else 1.0)
    uncached = not job.datasets or not all(d.cache_latents for d in job.datasets)
    rank = _max_rank(job)
    s = 0.0
    per_bucket: list[BucketTime] = []
    for w, tok in weights:
        plan = bucket_plan(job, tok, budget_gib)
        tf = step_tflop(tok, rank, t.gradient_checkpointing, t.batch_size, plan=plan)
        if t.dop.enabled:  # a LoRA-off forward for the class prompt, and a LoRA-on step on it (2.26x measured)
            tf = 2 * tf + t.batch_size * forward_tflop(tok, rank)
        secs = tf / _interp(curve, tok) * qf
        if uncached:
            secs += VAE_S_PER_KTOK * tok / 1000 * t.batch_size / speed
        if job.model.layer_offloading:
            secs *= OFFLOAD_TIME_FACTOR
        per_bucket.append(BucketTime(tok, round(secs * t.gradient_accumulation, 3), plan))
        s += w / total_w * secs
    if quant == "nf4" and not (cal and any(str(r.get("transformer")) == "nf4" for r in rows)):
        notes.append("nf4 step time is scaled from one measured shape (41x512², H100), not calibrated for this GPU")
    if t.dop.enabled:
        notes.append("DOP runs the class prompt through the expert twice per step (about 2.25x the step)")
    if job.model.layer_offloading:
        notes.append("layer offloading roughly doubles step time")
    s *= t.gradient_accumulation
    both = len(job.multistage.trained()) == 2
    if job.model.low_vram and both and not job.model.layer_offloading:
        # one host->device copy of the incoming expert from pinned memory (engine.train.parking: parking the
        # outgoing one copies nothing); through pageable Module.to both ways it measured 7.1-7.4 s (nf4, H100)
        swap = WEIGHTS_GIB[quant] / PCIE_GIB_S
        s += swap / job.multistage.switch_every
        notes.append(f"low_vram swaps experts every {job.multistage.switch_every} steps (~{swap:.0f} s each)")
    total_s = s * t.steps
    sm = job.sample
    if sm.enabled and sm.prompts:
        tok = video_tokens(sm.num_frames, sm.height, sm.width)
        per_video = sm.steps * 2 * forward_tflop(tok, rank) / _interp(curve, tok) * qf
        n_rounds = t.steps // sm.every + 1
        total_s += n_rounds * len(sm.prompts) * per_video
        notes.append(f"previews: {n_rounds} rounds x {len(sm.prompts)} prompt(s), ~{per_video:.0f} s each")
    return TimeEstimate(round(s, 2), total_s / 3600, label, source, notes, per_bucket)


def format_duration(hours: float) -> str:
    """Hours as people read them: "45 s", "12 min", "2.4 h" (a short job is never "0.0 h")."""
    secs = hours * 3600
    if secs < 90:
        return f"{max(1, round(secs))} s"
    if secs < 90 * 60:
        return f"{round(secs / 60)} min"
    return f"{hours:.1f} h"


def guide_hours(steps: int) -> tuple[float, float]:
    """The guide's ai-toolkit H100 wall time for ``steps`` (interpolated from its table)."""
    pts = sorted(GUIDE_HOURS.items())
    lo = _interp([(float(k), float(v[0])) for k, v in pts], steps) if steps <= 3000 else pts[-1][1][0] * steps / 3000
    hi = _interp([(float(k), float(v[1])) for k, v in pts], steps) if steps <= 3000 else pts[-1][1][1] * steps / 3000
    if steps < 1000:
        lo, hi = pts[0][1][0] * steps / 1000, pts[0][1][1] * steps / 1000
    return round(lo, 1), round(hi, 1)


def _max_rank(job: Job) -> int:
    """The largest LoRA rank of the trained experts ([multistage.<expert>] rank overrides included)."""
    return max([expert_plan(job, e).rank for e in job.multistage.trained()] or [job.target.rank])
