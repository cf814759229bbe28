"""The training loop: wires the small components into a run, and turns failures into exit codes.

``run(job_dir)`` is the whole life of one trainer process (``python -m wanlora.engine.train JOB_DIR``):
take ``run.lock`` → read ``job.toml`` → load only the trained experts + VAE + text encoder → attach one
LoRA per expert → resume from the newest complete state → loop over optimizer steps (alternating
experts), writing events/status, polling control flags, saving checkpoint pairs and resumable states →
final LoRA pair.  Every way out has an exit code from :mod:`engine.config.jobdir`.

The per-step math lives elsewhere (timesteps, conditioning, objective); this file only orders it.
"""

from __future__ import annotations

import gc
import math
import os
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from wanlora.engine.cache.prepare import Inputs, prepare_inputs
from wanlora.engine.config import jobdir
from wanlora.engine.config.findings import JobError
from wanlora.engine.config.io import load_job
from wanlora.engine.config.launch import EXPERT, multi_gpu_mode
from wanlora.engine.config.refusals import unload_with_dop
from wanlora.engine.config.schema import ExpertPlan, Job, expert_plan
from wanlora.engine.model import attention, lora_format
from wanlora.engine.model.conditioning import model_input
from wanlora.engine.model.load import ModelLoadError, WanParts, load_parts
from wanlora.engine.model.lora import add_lora, load_lora_state_dict, lora_state_dict
from wanlora.engine.model.offload import BlockStreamer
from wanlora.engine.model.part_sources import fp8_files_direct, job_files
from wanlora.engine.model.quant import QuantizationUnavailable, check_available, quantize_and_place
from wanlora.engine.train import acceleration as acc
from wanlora.engine.train import distributed, dop, evaluate
from wanlora.engine.train import ema as ema_mod
from wanlora.engine.train import expert_parallel as ep
from wanlora.engine.train import state as train_state
from wanlora.engine.train.batches import Batch, BatchSource, DataExhausted, make_batch_source
from wanlora.engine.train.checkpoint_plans import CheckpointPlanner
from wanlora.engine.train.control import StopSignal, take_flags
from wanlora.engine.train.events import EventLog, Status
from wanlora.engine.train.experts import Expert, place_experts
from wanlora.engine.train.failures import nan_message, oom_message
from wanlora.engine.train.objective import differential_guidance_target, flow_target, mse_loss, noisy_latents
from wanlora.engine.train.optim import OptimizerUnavailable, build_optimizer, lr_at, set_lr
from wanlora.engine.train.previews import training_previews
from wanlora.engine.train.sample_noise import batch_positions, draw_per_sample, sample_seed
from wanlora.engine.train.schedule import ExpertSchedule
from wanlora.engine.train.timesteps import sample_timesteps, sigmas_from_timesteps


class NonFiniteLoss(Exception):
    """The loss is NaN/inf: stop before the optimizer spreads it into the weights."""


class StopRun(Exception):
    """Leave the loop with this exit code (pause, signal) after a resumable state was saved."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass
class StepResult:
    loss: float
    expert: str
    timestep: float
    lr: float
    dop_loss: float | None = None


def output_dir(job: Job, job_dir: Path) -> Path:
    """Where LoRA files go: ``job.output_dir`` if set, else ``JOB_DIR/checkpoints``."""
    return Path(job.job.output_dir).expanduser() if job.job.output_dir else Path(job_dir) / jobdir.CHECKPOINTS


def lora_filename(name: str, expert: str, step: int | None) -> str:
    """``<name>_<expert>_<step:06d>.safetensors``, or ``<name>_<expert>.safetensors`` for the final pair."""
    return f"{name}_{expert}.safetensors" if step is None else f"{name}_{expert}_{step:06d}.safetensors"


def prune_checkpoints(out_dir: Path, name: str, expert: str, max_keep: int) -> list[Path]:
    """Delete all but the newest ``max_keep`` step files of one expert (the final file is never touched)."""
    pat = re.compile(rf"^{re.escape(name)}_{expert}_(\d{{6,}})\.safetensors$")
    found = sorted((int(m.group(1)), p) for p in out_dir.iterdir() if (m := pat.match(p.name)))
    doomed = [p for _s, p in found[: max(0, len(found) - max_keep)]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class Trainer:
    """One run of one job; built by :func:`run`, usable directly by tests."""

    def __init__(self, job: Job, job_dir: Path, events: EventLog, status: Status,
                 device: torch.device | None = None, stop: StopSignal | None = None,
                 dist: distributed.DistContext | None = None, *, model_source: Any = load_parts,
                 cache_root: Path | None = None) -> None:
        self.job, self.job_dir, self.events, self.status = job, Path(job_dir), events, status
        # ``load_parts`` unless a trial swaps in random full-size weights; a trial also keeps its caches apart
        self.model_source, self.cache_root = model_source, cache_root
        self.dist = dist or distributed.SINGLE  # rank 0 of 1 unless launched by torchrun
        self.device = device or (self.dist.device if self.dist.enabled else pick_device())
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.stop = stop or StopSignal()
        # each expert's checkpoint plan per bucket (a trial may force one: ``checkpointing.override``)
        self.checkpointing = CheckpointPlanner(self.device, enabled=job.training.gradient_checkpointing,
                                               batch_size=job.training.batch_size)
        # which expert each step trains: the trained experts, switch_every, steps (engine.train.schedule)
        self.schedule = ExpertSchedule.of(job)
        self.trained = list(self.schedule.trained)
        # how several processes split the work (engine.config.launch.multi_gpu_mode): data or expert-parallel
        self.parallel, self.parallel_why = multi_gpu_mode(job, self.dist.world_size)
        self.groups: ep.ExpertGroups | None = None  # expert-parallel: this rank's expert group (setup)
        self.owned = list(self.trained)  # the experts this process loads and trains
        self.steps_done = {e: 0 for e in self.trained}  # every trained expert's, on every rank
        self._gapped = False  # resumed from a state that is not a step prefix (see engine.train.expert_parallel)
        self._last_s: int | None = -1  # the global step whose batches this rank read last (None: unknown)
        # each expert's own learning rate / rank / alpha / timestep shaping ([multistage.<expert>] over the job's)
        self.plans: dict[str, ExpertPlan] = {e: expert_plan(job, e) for e in self.trained}
        self.out_dir = output_dir(job, job_dir)
        self.experts: dict[str, Expert] = {}
        self.parts: WanParts | None = None
        self.data: BatchSource | None = None
        self.step = 0  # optimizer steps completed
        self.last_checkpoint: str | None = None
        seed = job.training.seed
        # Own generators (saved with the state): timesteps on the CPU, noise on the training device.
        self.gen_t = torch.Generator("cpu").manual_seed(seed)
        self.gen_noise = torch.Generator(self.device).manual_seed(seed + 1)
        self._s_per_step: float | None = None
        self.inputs: Inputs | None = None  # per-step latents + embeddings (caches or live), set by setup()
        self.last_dop: torch.Tensor | None = None
        self.step_reg = 0  # regularization samples in the current step (reported, then reset)
        self.eval_set: evaluate.EvalSet | None = None  # held-out clips (engine.train.evaluate), rank 0

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        job = self.job
        if job.training.dop.enabled and not job.job.trigger_word.strip():
            raise JobError([], "training.dop.enabled needs job.trigger_word: without a trigger the preservation "
                               "prompt is the training caption itself and DOP undoes what the LoRA learns; set "
                               "job.trigger_word (and use it in the captions) or set training.dop.enabled = false")
        if (refused := unload_with_dop(job)) is not None:  # validate's own refusal, for a job that skipped it
            raise JobError([refused])
        self.status.update(state="loading", total_steps=job.training.steps)
        if self.parallel == EXPERT:  # half the ranks per expert, for the whole run
            self.groups = ep.make_groups(self.dist, self.trained)
            self.owned, self._last_s = [self.groups.expert], None
        self.events.emit("state", state="loading", experts=self.trained, device=str(self.device),
                         **({"loads": self.owned} if self.groups else {}))
        if self.dist.enabled:
            self.events.emit("state", state="parallel", mode=self.parallel, why=self.parallel_why,
                             world_size=self.dist.world_size,
                             per_expert=self.groups.size if self.groups else self.dist.world_size)
        torch.manual_seed(job.training.seed)
        quant = job.quantization.transformer
        if quant != "none":
            if self.device.type != "cuda":
                raise QuantizationUnavailable(f"quantization.transformer = \"{quant}\" needs a CUDA GPU; "
                                              "use \"none\" on this machine")
            check_available(quant, self.device)
        files = job_files(job.model)  # single-file parts (ComfyUI / original Wan), streamed to the device
        stage_on_cpu = quant != "none" and not fp8_files_direct(files, self.trained, quant, job.model.low_vram)
        extra = {"files": files, "transformer_quant": quant} if files else {}  # sources without files: unchanged
        self.parts = self.model_source(job.model.name_or_path, self.owned, dtype=self.dtype, device=self.device,
                                boundary_override=job.model.boundary_ratio, vae_dtype=torch.float32,
                                expert_device="cpu" if stage_on_cpu or job.advanced.fsdp or self._offloading else None,
                                text_encoder_quant=job.quantization.text_encoder if self.device.type == "cuda" else "none",
                                **extra)
        self._warn_unsupported()
        for name in self.owned:
            self.experts[name] = self._prepare_expert(name)
            # low_vram: each expert waits in CPU memory once placed; caching and planning see one expert at most
            place_experts(self.experts, None, self.device, self._swapping)
        for ex in self.experts.values():  # every rank starts from its group lead's fresh LoRA
            if self.groups is None:
                distributed.broadcast_params(self.dist, ex.params)
            else:
                ep.broadcast_in_group(self.groups, ex.params)
        # This rank's shard of the one global order (caching can split its work the same way: rank/world);
        # expert-parallel: its share within its expert's group.
        rank, world = (self.groups.group_rank, self.groups.size) if self.groups else (self.dist.rank,
                                                                                    self.dist.world_size)
        self.data = make_batch_source(job, seed=job.training.seed, warn=self._data_warning,
                                      prefetch=2 if self.device.type == "cuda" else 0, rank=rank, world_size=world)
        self.eval_set = evaluate.setup_eval(self)  # held-out clips, encoded before the caches free VAE/TE
        self.inputs = prepare_inputs(job, self.parts, self.data, device=self.device, dtype=self.dtype,
                                     emit=self.events.emit, warn=self._data_warning,
                                     fallback_root=self.cache_root, only_root=self.cache_root is not None)
        # after caching: the memory the text encoder and VAE held (freed when cached) goes to activations
        self._plan_checkpointing()
        if job.training.ema:
            ema_mod.attach(self.experts, job.training.ema_decay)
        latest = distributed.broadcast_object(self.dist, train_state.latest_state(self.job_dir))  # rank 0's pick
        if latest is not None:
            self._resume(latest)
        self.events.emit("state", state="ready", step=self.step, boundary_ratio=self.parts.boundary_ratio,
                         resumed_from=str(latest) if latest else None,
                         expert_settings={n: self.plans[n].as_dict() for n in self.trained})

    @property
    def _offloading(self) -> bool:
        return self.job.model.layer_offloading and self.device.type == "cuda"

    @property
    def _swapping(self) -> bool:
        """low_vram on CUDA: only the expert in training sits on the GPU (offloading streams blocks instead)."""
        return self.job.model.low_vram and self.device.type == "cuda" and not self._offloading

    def _plan_checkpointing(self) -> None:
        """Checkpoint only what memory requires, keeping attention outputs; then compile (bench/step.py).

        On CUDA each bucket gets its own plan, made from the free memory with every trained expert loaded:
        a plan sized for the largest bucket checkpoints far more than a small one needs (the guide's run at
        512² took 2.13 s/step under the 1024² plan against 1.76 s under its own).  Checkpointed blocks keep
        their self-attention output (it dominates the recompute at long sequences).  The plan in force is
        switched per batch (:mod:`engine.train.checkpoint_plans`).
        """
        job = self.job
        if self._offloading:
            return
        buckets = sorted({acc.video_tokens(d.num_frames, r, r) for d in job.datasets for r in d.resolutions}) or [0]
        cuda = self.device.type == "cuda"
        for name, ex in self.experts.items():
            place_experts(self.experts, name, self.device, self._swapping)  # plan with this expert alone resident
            held = self.checkpointing.plan(name, ex.model, buckets, pending_bytes=self._pending_optimizer_bytes())
            for tokens, plan in held.planned.items():
                self.events.emit("state", state="checkpointing", expert=name, checkpointed_blocks=plan.checkpointed,
                                 blocks=held.blocks, tokens=tokens, saved_attention=plan.keep_attention if cuda else 0)
            # CPU: the warm-up costs more than it saves.  nf4 blocks compile too (bitsandbytes' 4-bit matmul
            # traces): 2.31 vs 3.12 s/step at 41x512² on the 24 GB tier, same losses (H100, BENCHMARKS §00)
            if job.advanced.compile and cuda:
                acc.compile_blocks(ex.model, shapes=len(buckets))

    def _pending_optimizer_bytes(self) -> float:
        """What the first steps will add on the GPU that planning does not see yet: each expert's LoRA
        gradients and AdamW moments (allocated lazily; 1.8 GiB for two rank-16 experts with fp32 masters,
        which had the 80 GB card overshoot its plan by that much)."""
        total = 0.0
        for ex in self.experts.values():
            if ex.optimizer.state:
                continue
            total += sum(p.numel() * p.element_size() * 3 for p in ex.params)  # grad + exp_avg + exp_avg_sq
        return total

    def _warn_unsupported(self) -> None:
        """Settings this build accepts but does not apply yet: say so once, never silently."""
        job = self.job
        notes = []
        if job.model.layer_offloading and self.device.type != "cuda":
            notes.append("model.layer_offloading applies on CUDA only; on this device the blocks stay resident")
        for n in notes:
            self.events.emit("warning", message=n)

    def _prepare_expert(self, name: str) -> Expert:
        job = self.job
        model = self.parts.experts[name]
        plan = self.plans[name]
        # the LoRA and AdamW's moments in fp32 (advanced.lora_master_dtype), its matmuls in the compute dtype:
        # bf16 masters round most AdamW updates away (engine.model.lora.InputDtypeLinear)
        lora_dtype = torch.float32 if job.advanced.lora_master_dtype == "fp32" else torch.bfloat16
        # each expert's fresh LoRA from its own seed: the same whether or not the other expert is loaded here
        torch.manual_seed(sample_seed(job.training.seed, 0, f"lora:{name}"))
        params = add_lora(model, plan.rank, plan.alpha, job.target.modules, dtype=lora_dtype)
        quant = job.quantization.transformer
        if quant != "none" and not self._offloading:  # after LoRA: only the frozen base Linears are quantised
            n = quantize_and_place(model, quant, self.device)
            self.events.emit("state", state="quantized", expert=name, mode=quant, linears=n)
        if job.advanced.fsdp:  # shard the frozen base over the ranks before compile wraps the blocks
            n = distributed.shard_frozen_base(self.dist, model, params)
            self.events.emit("state", state="sharded", expert=name, linears=n, world_size=self.dist.world_size)
        kernel, note = attention.choose(job.advanced.attention_backend, self.device,
                                        head_dim=model.config.attention_head_dim)
        attention.apply(model, kernel)
        if note and name == self.owned[0]:
            self.events.emit("warning", message=note)
        self.events.emit("state", state="attention", expert=name, kernel=kernel)
        if self._offloading:  # blocks stream from pinned CPU memory; every block must be checkpointed
            acc.set_checkpointing(model, len(model.blocks))
            # quantised block by block on the way to host memory: the GPU never holds the whole expert
            streamer = BlockStreamer(model, self.device, compile_blocks=job.advanced.compile, quantize=quant)
            if quant != "none":
                self.events.emit("state", state="quantized", expert=name, mode=quant, linears=streamer.quantized)
            self.events.emit("state", state="offloading", expert=name,
                             streamed_gib_per_pass=round(streamer.bytes_per_pass / 2**30, 2))
        model.train()
        opt = build_optimizer(params, job.training.optimizer, plan.learning_rate, plan.weight_decay, self.device)
        return Expert(name=name, model=model, params=params, optimizer=opt)

    def _data_warning(self, message: str, path: str | None = None) -> None:
        self.events.emit("warning", message=message, path=path)

    # ---------------------------------------------------------------- state
    def _generators(self) -> dict[str, torch.Generator]:
        return {"timesteps": self.gen_t, "noise": self.gen_noise}

    @property
    def batches_per_step(self) -> int:
        """Global batches one optimizer step reads: the processes on that step × gradient accumulation."""
        ranks = self.groups.size if self.groups else self.dist.world_size
        return ranks * self.job.training.gradient_accumulation

    def _snapshots(self, what: str) -> dict[str, dict[str, Any]]:
        """Every expert's adapter (+ optimizer, EMA for ``state``; file weights for ``checkpoint``) on rank 0.

        Expert-parallel: the other group's lead sends its expert's (every rank calls this)."""
        own: dict[str, dict[str, Any]] = {}
        sends = self.dist.is_main or (self.groups is not None and self.groups.is_lead)
        for n, ex in self.experts.items() if sends else ():
            live = lora_state_dict(ex.model)
            if what == "state":
                ema = ema_mod.of(ex)
                own[n] = {"adapter": live, "optimizer": ex.optimizer.state_dict(),
                          "ema": None if ema is None else ema.state_dict()}
            else:
                weights, wmeta = ema_mod.file_weights(ex, live)
                own[n] = {"weights": weights, "wmeta": wmeta}
        if self.groups is None:
            return own
        return ep.gather_to_main(self.dist, self.groups, own, ep.cpu_copy)

    def _data_state(self) -> dict[str, Any]:
        """The data position to save: the stream's own, or (expert-parallel / not a step prefix) the first
        batch of the lowest step not done, which is where any trainer resuming this state starts."""
        st = dict(self.data.state_dict())
        if self.groups is not None or self._gapped:
            nxt = self.schedule.next_step(self.steps_done)
            st["next_batch"] = (self.job.training.steps if nxt is None else nxt) * self.batches_per_step
        return st

    def save_state(self) -> Path | None:
        snaps = self._snapshots("state")
        if not self.dist.is_main:  # rank 0 writes the one state (its group's lead sent the other expert's)
            return None
        meta = {"job": self.job.job.name, "expert_phase": self.schedule.expert_for(self.step),
                "experts": self.trained, "steps_done": dict(self.steps_done), "multi_gpu": self.parallel,
                "last_checkpoint": self.last_checkpoint, "data": self._data_state()}
        path = train_state.save_state(
            self.job_dir, self.step,
            adapters={**{n: s["adapter"] for n, s in snaps.items()},
                      **{f"{n}{ema_mod.EMA_SUFFIX}": s["ema"] for n, s in snaps.items() if s["ema"] is not None}},
            optimizers={n: s["optimizer"] for n, s in snaps.items()},
            rng=train_state.capture_rng(self._generators()), meta=meta)
        self.events.emit("state", state="saved", step=self.step, path=str(path))
        return path

    def _resume(self, path: Path) -> None:
        st = distributed.load_everywhere(self.dist, path, train_state.load_state)
        meta = st["meta"]
        missing = [n for n in self.trained if n not in st["adapters"]]
        if missing:
            raise JobError([], f"the saved state {path} has no {', '.join(missing)} adapter; the job's "
                               "multistage settings changed since it was saved (remove state/ to start over)")
        self.step = int(meta["step"])
        done = {e: int(meta.get("steps_done", {}).get(e, 0)) for e in self.trained}
        self.steps_done = done if sum(done.values()) == self.step else self.schedule.steps_done_at(self.step)
        for name, ex in self.experts.items():
            load_lora_state_dict(ex.model, st["adapters"][name])
            ex.optimizer.load_state_dict(st["optimizers"][name])
            ex.steps_done = self.steps_done[name]
        ema_mod.restore(self.experts, st["adapters"], self._data_warning)
        train_state.restore_rng(st["rng"], self._generators())
        self.data.load_state_dict(meta["data"])
        nxt = self.schedule.next_step(self.steps_done)
        # an expert-parallel state mid-cycle: continue from the lowest step not done, skipping the others
        self._gapped = nxt is not None and nxt != self.step
        self._last_s = None if (self._gapped or self.groups) else self.step - 1
        self.last_checkpoint = meta.get("last_checkpoint")
        self.events.emit("state", state="resumed", step=self.step, path=str(path))

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, final: bool = False) -> list[Path]:
        """The LoRA pair for the current step (or the final pair), then max_keep pruning."""
        job = self.job
        snaps = self._snapshots("checkpoint")
        if not self.dist.is_main:
            return []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in self.trained:
            plan, snap = self.plans[name], snaps[name]
            meta = lora_format.lora_metadata(
                base_model=job.model.name_or_path, expert=name, rank=plan.rank,
                alpha=plan.alpha, trigger=job.job.trigger_word, step=self.step,
                recipe=job.job.preset, modules=job.target.modules, boundary_ratio=self.parts.boundary_ratio,
                extra={**plan.training_metadata(), "expert_steps": self.steps_done[name],
                       "per_expert": plan.own_keys()})
            path = self.out_dir / lora_filename(job.job.name, name, None if final else self.step)
            lora_format.save_lora(path, snap["weights"], alpha=plan.alpha, dtype=job.save.dtype,
                                  metadata={**meta, **snap["wmeta"]})
            written.append(path)
        for name in self.trained:  # only after every new file is complete
            prune_checkpoints(self.out_dir, job.job.name, name, job.save.max_keep)
        self.last_checkpoint = str(written[0])
        self.events.emit("checkpoint", step=self.step, files=[str(p) for p in written], final=final)
        self.status.update(last_checkpoint=self.last_checkpoint)
        evaluate.eval_at_save(self, written, final)  # the pair's eval loss per expert (eval datasets only)
        return written

    # ---------------------------------------------------------------- one step
    def embed(self, captions: list[str]) -> torch.Tensor:
        """Caption embeddings for the transformer: from the text cache when on, else the live encoder."""
        return self.inputs.embed(captions)

    def forward_loss(self, ex: Expert, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow-matching loss of one micro-batch on ``ex`` (and the timesteps drawn)."""
        job, parts = self.job, self.parts
        x0, cond = self.inputs.latents(batch, parts.vae, self.device)  # cached or encoded now
        self.checkpointing.use(ex.name, x0.shape[-3] * (x0.shape[-2] // 2) * (x0.shape[-1] // 2))  # patch 1x2x2
        self.step_reg += sum(bool(s.is_regularization) for s in getattr(batch, "samples", []))
        emb = self.embed(batch.captions)
        positions = batch_positions(batch)
        plan = self.plans[ex.name]
        if positions is not None:  # keyed per sample: the same draws whatever the batch size or world size
            t, noise = draw_per_sample(positions, job.training.seed, x0.shape[1:], expert=ex.name,
                                       boundary_ratio=parts.boundary_ratio, kind=plan.timestep_type,
                                       bias=plan.timestep_bias, device=self.device, dtype=x0.dtype)
        else:
            t = sample_timesteps(x0.shape[0], ex.name, parts.boundary_ratio, plan.timestep_type,
                                 plan.timestep_bias, generator=self.gen_t).to(self.device)
            noise = torch.randn(x0.shape, generator=self.gen_noise, device=self.device, dtype=x0.dtype)
        xt = noisy_latents(x0, noise, sigmas_from_timesteps(t))
        inp = model_input(xt, cond, self.dtype)
        pred = ex.model(inp, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
        target = flow_target(x0, noise)
        if job.advanced.differential_guidance:
            target = differential_guidance_target(pred, target, job.advanced.differential_guidance_scale)
        loss, self.last_dop = mse_loss(pred, target), None
        if job.training.dop.enabled:  # same noisy input and t, class prompt: LoRA on pulled toward LoRA off
            cls = self.embed(dop.batch_prompts(batch, job.job.trigger_word, job.training.dop.preservation_class,
                                               inject=job.job.inject_trigger))
            self.last_dop = dop.preservation_term(ex.model, inp, t, cls, job.training.dop.multiplier)
            loss = loss + self.last_dop
        return loss, t

    def train_step(self) -> StepResult:
        """One optimizer step on the expert this step belongs to (with gradient accumulation)."""
        s, name = self._next_step()
        ex = self.experts[name]
        lr, total, t_first, dop_total = self._compute(s, name)
        distributed.average_gradients(self.dist, ex.params)  # N ranks × batch b ≡ one process × batch N·b
        total = distributed.mean_value(self.dist, total)
        loss_value = float(total.item())  # the one host sync per step (the loss is logged anyway)
        if not math.isfinite(loss_value):
            ex.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(nan_message(self.step + 1, self.last_checkpoint, lr))
        self._update(ex)
        self._count(name)
        return StepResult(loss=loss_value, expert=name, timestep=float(t_first[0]), lr=lr,
                          dop_loss=None if dop_total is None else float(dop_total))

    def _next_step(self) -> tuple[int, str]:
        """The global step to train next and its expert: ``self.step``, or after resuming a state that is
        not a step prefix, the lowest step not done yet (engine.train.expert_parallel)."""
        s = self.step
        if self._gapped:
            nxt = self.schedule.next_step(self.steps_done)
            s = self.step if nxt is None else nxt
        return s, self.schedule.expert_for(s)

    def _compute(self, s: int, name: str) -> tuple[float, torch.Tensor, torch.Tensor, Any]:
        """Forward + backward of global step ``s`` on expert ``name``, on this rank's batches of that step."""
        job = self.job
        ex = self.experts[name]
        place_experts(self.experts, name, self.device, self._swapping)
        lr = lr_at(s, self.plans[name].learning_rate, job.training.steps, job.training.lr_warmup_steps,
                   job.training.lr_scheduler)
        set_lr(ex.optimizer, lr)
        if self._last_s is None or s != self._last_s + 1:  # not the stream's next step: go to step s's batches
            ep.seek(self.data, s * self.batches_per_step)
        self._last_s = s
        batches = [self.data.next_batch() for _ in range(job.training.gradient_accumulation)]
        while True:
            try:
                total, t_first, dop_total = self._accumulate(ex, batches)
                return lr, total, t_first, dop_total
            except torch.OutOfMemoryError:  # the speed plan overshot: fall back to the frugal one, once
                if not self._relax_checkpointing(ex):
                    raise
            self.free_failed_step()
            # what the retry starts from (CUDA): the failed step's memory should be gone by now
            held = torch.cuda.memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
            self.events.emit("state", state="retrying", expert=ex.name,
                             allocated_gib=None if held is None else round(held, 2))

    def _update(self, ex: Expert) -> None:
        """Clip, optimizer step, EMA: the averaged gradients become the expert's new LoRA."""
        if self.job.training.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(ex.params, self.job.training.max_grad_norm)
        ex.optimizer.step()
        ex.optimizer.zero_grad(set_to_none=True)
        if (ema := ema_mod.of(ex)) is not None:
            ema.update()
        ex.steps_done += 1

    def _count(self, name: str) -> None:
        """One more step of ``name`` done (every rank counts every expert's steps)."""
        self.steps_done[name] += 1
        self.step += 1
        if self._gapped:
            self._gapped = self.schedule.next_step(self.steps_done) not in (None, self.step)

    def round_step(self) -> list[StepResult]:
        """Expert-parallel: this group's next step of its own expert, and what the other group's step gave.

        Both groups step at once; every rank learns both results (one small all-reduce) and stops on a
        non-finite loss of either, so the groups never part ways."""
        g, job = self.groups, self.job
        s = self.schedule.global_step(g.expert, self.steps_done[g.expert])
        ex, mine, lr = self.experts[g.expert], None, 0.0
        if s < job.training.steps:
            lr, total, t_first, dop_total = self._compute(s, g.expert)
            ep.average_in_group(g, ex.params)
            mine = (total, float(t_first[0]), dop_total)
        got = ep.exchange(self.dist, g, mine)
        for r in got.values():
            if not math.isfinite(r.loss):
                ex.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLoss(nan_message(self.step + 1, self.last_checkpoint, lr))
        if mine is not None:
            self._update(ex)
        out = []
        for e in self.trained:
            if e in got:
                se = self.schedule.global_step(e, self.steps_done[e])
                lr_e = lr_at(se, self.plans[e].learning_rate, job.training.steps, job.training.lr_warmup_steps,
                             job.training.lr_scheduler)
                out.append(StepResult(loss=got[e].loss, expert=e, timestep=got[e].timestep, lr=lr_e,
                                      dop_loss=got[e].dop_loss))
                self.steps_done[e] += 1  # self.step advances as each result is reported
        return out

    def _accumulate(self, ex: Expert, batches: list[Batch]) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Forward + backward of every micro-batch of one step; (mean loss, first timesteps, mean DOP term)."""
        total = torch.zeros((), device=self.device)
        t_first, dop_total = None, None
        for batch in batches:
            loss, t = self.forward_loss(ex, batch)
            (loss / len(batches)).backward()
            total += loss.detach() / len(batches)
            if self.last_dop is not None:
                dop_total = (0 if dop_total is None else dop_total) + self.last_dop.detach() / len(batches)
            t_first = t if t_first is None else t_first
        return total, t_first, dop_total

    def _relax_checkpointing(self, ex: Expert) -> bool:
        """After a CUDA OOM: the bucket in force checkpoints every block and keeps no attention outputs;
        False if it already did.

        The planner sizes selective checkpointing from free memory at start; a bucket or a second expert it
        misjudged must cost speed, not the run (and only in that bucket).  Timesteps and noise are keyed per
        sample, so the retried step draws exactly what the failed one drew.
        """
        if self._offloading:
            return False
        key = self.checkpointing.relax(ex.name)
        if key is None:
            return False
        ex.optimizer.zero_grad(set_to_none=True)
        self.events.emit("warning", expert=ex.name, tokens=key, message="CUDA out of memory under the speed plan; "
                         f"this expert now checkpoints every block in the {key}-token bucket (slower, fits) and the "
                         "step is retried")
        return True

    def free_failed_step(self) -> None:
        """Release what the step that ran out of memory still holds, before it is retried.

        Whatever of its frames (activations, the autograd graph) sits in a reference cycle with the error's
        traceback is never freed by refcounting; without a collection the retry would start with that memory
        still allocated.  The DOP term of the failed step holds its whole graph until dropped.
        """
        self.last_dop = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---------------------------------------------------------------- the loop
    def _report(self, r: StepResult, dt: float) -> None:
        total = self.job.training.steps
        self._s_per_step = dt if self._s_per_step is None else 0.9 * self._s_per_step + 0.1 * dt
        eta = self._s_per_step * (total - self.step)
        peak = None
        if self.device.type == "cuda":
            peak = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.events.emit("step", step=self.step, total_steps=total, loss=r.loss, lr=r.lr, expert=r.expert,
                         timestep=round(r.timestep, 3), s_per_step=round(dt, 4), peak_vram_gb=peak,
                         eta_s=round(eta, 1), **({} if r.dop_loss is None else {"dop_loss": r.dop_loss}),
                         **({"reg_samples": self.step_reg} if any(d.is_regularization for d in self.job.datasets)
                            else {}))
        self.step_reg = 0
        self.status.update(state="running", step=self.step, total_steps=total, loss=r.loss, expert=r.expert,
                           eta_s=round(eta, 1))

    def sample_previews(self, why: str = "sample.every") -> list[Path]:
        """I2V previews of every [[sample.prompts]] row with the current LoRAs (rank 0), under samples/."""
        if not self.dist.is_main:
            return []
        if self.groups is not None:  # rank 0 holds one expert; a preview needs both
            self.events.emit("warning", message=f"{why}: no previews in an expert-parallel run (each GPU holds one "
                             "expert); render a saved pair with `wanlora sample` or `wanlora compare`")
            return []
        if not self.job.sample.prompts:
            self.events.emit("warning", message=f"{why}: no previews, the job has no [[sample.prompts]]")
            return []
        return training_previews(job=self.job, parts=self.parts, experts=self.experts, embed=self.inputs.embed,
                                 out_dir=self.job_dir / jobdir.SAMPLES, step=self.step, device=self.device,
                                 dtype=self.dtype, emit=self.events.emit,
                                 emas={n: e for n, ex in self.experts.items() if (e := ema_mod.of(ex))})

    def _handle_flags(self) -> None:
        flags = take_flags(self.job_dir) if self.dist.is_main else []
        # rank 0's flags and any rank's signal, agreed by all: every rank acts at this same step.  Only the
        # signal handler writes ``self.stop.requested``: assigning the agreed value back overwrote a SIGTERM
        # that landed during the all-reduce, and torchrun killed the ranks 30 s later without a state.
        flags, stop = distributed.agree_on_control(self.dist, flags, self.stop.requested)
        for flag in sorted(flags, key=lambda f: f == jobdir.FLAG_PAUSE):  # pause last: the others still run
            if flag == jobdir.FLAG_SAVE_NOW:
                self.save_checkpoint()
                self.save_state()
            elif flag == jobdir.FLAG_SAMPLE_NOW:
                self.sample_previews(why="sample_now")
            elif flag == jobdir.FLAG_PAUSE:
                self.save_checkpoint()
                self.save_state()
                distributed.barrier(self.dist)  # nobody exits before rank 0's files are complete
                raise StopRun(jobdir.EXIT_PAUSED, "paused")
        if stop is not None:
            self.save_state()
            distributed.barrier(self.dist)
            raise StopRun(128 + 15 if stop == "SIGTERM" else 130, f"stopped by {stop}")

    def train(self) -> int:
        job = self.job
        every = job.save.every
        self.status.update(state="running", step=self.step, total_steps=job.training.steps,
                           last_checkpoint=self.last_checkpoint)
        self.events.emit("state", state="running", step=self.step, total_steps=job.training.steps)
        while self.step < job.training.steps:
            self._handle_flags()
            t0, before = time.perf_counter(), self.step
            # expert-parallel: a round is one step of each expert at once (two steps of the job's count)
            results = self.round_step() if self.groups else [self.train_step()]
            dt = (time.perf_counter() - t0) / max(1, len(results))
            for r in results:
                self.step += 1 if self.groups else 0
                self._report(r, dt)
            if ep.crossed(before, self.step, every) and self.step < job.training.steps:
                self.save_checkpoint()
                self.save_state()
            if job.sample.enabled and ep.crossed(before, self.step, job.sample.every):
                self.sample_previews()
        self.save_checkpoint(final=True)
        self.save_state()
        return jobdir.EXIT_OK


def _fail(events: EventLog, status: Status, reason: str, message: str, **extra: Any) -> None:
    events.emit("error", reason=reason, message=message, **extra)
    status.update(state="failed", reason=reason, message=message)


def run(job_dir: Path, device: torch.device | None = None) -> int:
    """The trainer process for ``job_dir``; returns a ``jobdir.EXIT_*`` code (or 143/130 on a signal)."""
    job_dir = Path(job_dir)
    group = distributed.open_run(job_dir, device)  # torchrun group (or one process), lock, writers, signals
    if group is None:
        print(f"another trainer already runs {job_dir} (run.lock is held)", flush=True)
        return jobdir.EXIT_LOCKED
    events, status, stop = group.events, group.status, group.stop
    trainer: Trainer | None = None
    try:
        events.emit("state", state="starting", pid=os.getpid())
        status.update(state="starting")
        try:
            job = load_job(job_dir / jobdir.JOB_TOML)
            trainer = Trainer(job, job_dir, events, status, device=device, stop=stop, dist=group.ctx)
            trainer.setup()
        except (JobError, ModelLoadError, OptimizerUnavailable, QuantizationUnavailable, ValueError) as e:
            _fail(events, status, "config", str(e))
            return jobdir.EXIT_CONFIG
        except DataExhausted as e:
            _fail(events, status, "data", str(e))
            return jobdir.EXIT_DATA
        code = trainer.train()
        status.update(state="completed", step=trainer.step, eta_s=0, reason="completed")
        events.emit("state", state="completed", step=trainer.step, files=trainer.last_checkpoint)
        return code
    except StopRun as e:
        status.update(state="paused" if e.code == jobdir.EXIT_PAUSED else "stopped", reason=e.reason)
        events.emit("state", state="paused" if e.code == jobdir.EXIT_PAUSED else "stopped", reason=e.reason,
                    step=trainer.step if trainer else 0)
        if e.code == jobdir.EXIT_PAUSED and trainer is not None and not trainer.dist.is_main:
            return jobdir.EXIT_OK  # a paused group reports through rank 0; torchrun must not kill it mid-exit
        return e.code
    except NonFiniteLoss as e:
        _fail(events, status, "nan", str(e), last_checkpoint=trainer.last_checkpoint if trainer else None)
        return jobdir.EXIT_NAN
    except DataExhausted as e:
        _fail(events, status, "data", str(e))
        return jobdir.EXIT_DATA
    except torch.OutOfMemoryError as e:
        msg = oom_message(trainer.job, str(e).splitlines()[0][:200]) if trainer else str(e)
        _fail(events, status, "oom", msg)
        return jobdir.EXIT_OOM
    except Exception as e:  # a crash: record it where the user looks, then re-raise for the traceback
        _fail(events, status, "crash", f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        raise
    finally:
        if trainer is not None and hasattr(trainer.data, "close"):
            trainer.data.close()
        group.close()
