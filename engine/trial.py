"""``wanlora trial JOB``: the job's real trainer path on this GPU, with random full-size weights, in minutes.

Before a 70 GB download and days of rent, a user learns what *their* job costs on *this* GPU: the job's
clips go through decode, buckets and caching (full-size VAE + UMT5-XXL), both experts run under the job's
quantisation / low_vram / offloading / compile / checkpoint plan for a few steps per bucket, a checkpoint
pair is written and one preview rendered if the job samples.  The report gives, per bucket, s/step after
the compile warm-up (warm-up shown apart), peak VRAM allocated and reserved, the checkpoint plan, the cost
of switching experts; caching time per clip; preview time; and the projected wall time of the whole job.

Only the weights are fake (:mod:`engine.model.fullsize`); everything else is :class:`engine.train.loop.
Trainer` as the daemon runs it.  Nothing is written into the job's folders: model files, caches, events
and LoRA files live in a temporary folder that is removed afterwards.  Without CUDA the trial runs the
tiny architecture on the CPU (that is how CI tests it) and says so.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from wanlora.engine.config.io import job_to_dict
from wanlora.engine.config.schema import Job
from wanlora.engine.train import acceleration as acc
from wanlora.engine.train.events import EventLog, Status
from wanlora.engine.train.schedule import ExpertSchedule

Progress = Callable[[str], None]
GIB = 2**30


def _label(bucket: tuple[int, int, int]) -> str:
    f, h, w = bucket
    return f"{f}x{h}x{w}"


def _sample_clips(d: dict[str, Any], tmp: Path, clips: int) -> tuple[int, int]:
    """Point each dataset with more than ``clips`` media files at a folder of links to its first ``clips``
    (captions and other files linked too); returns (clips used, clips in the job)."""
    from wanlora.engine.data.scan import ScanError, list_media

    used = total = 0
    for i, ds in enumerate(d.get("datasets") or []):
        try:
            media, _ = list_media(ds["folder"])
        except ScanError:
            continue  # the trainer names the folder and the fix
        total += len(media)
        used += min(clips, len(media))
        if len(media) <= clips:
            continue
        sub = tmp / "clips" / str(i)
        sub.mkdir(parents=True, exist_ok=True)
        skip = set(media[clips:])
        for p in Path(ds["folder"]).expanduser().iterdir():
            if p.is_file() and p not in skip:
                (sub / p.name).symlink_to(p.resolve())
        ds["folder"] = str(sub)
    return used, total


def trial_job(job: Job, tmp: Path, *, tiny_model: Path | None,
              clips: int | None = None) -> tuple[Job, list[str], tuple[int, int] | None]:
    """The job as the trial runs it (outputs in ``tmp``, one preview prompt, at most ``clips`` clips per
    dataset), notes on what differs, and (clips used, clips in the job) where fewer are used."""
    d = job_to_dict(job)
    notes: list[str] = []
    sampled = None
    if clips is not None:
        used, total = _sample_clips(d, tmp, clips)
        if used < total:
            sampled = (used, total)
            notes.append(f"--clips {clips}: caches and trains on {used} of the job's {total} clips; the caching time "
                         f"is projected to all {total}")
    d["job"]["output_dir"] = str(tmp / "out")
    prompts = d.get("sample", {}).get("prompts") or []
    if len(prompts) > 1:
        d["sample"]["prompts"] = prompts[:1]
    if tiny_model is not None:
        d["model"]["name_or_path"] = str(tiny_model)
        for key in ("transformer", "text_encoder"):
            if d.get("quantization", {}).get(key, "none") != "none":
                notes.append(f"quantization.{key} = {d['quantization'][key]!r} needs CUDA; the CPU trial runs it "
                             "unquantised")
                d["quantization"][key] = "none"
        if d.get("training", {}).get("optimizer") == "adamw8bit":
            d["training"]["optimizer"] = "adamw"
            notes.append("training.optimizer = 'adamw8bit' needs CUDA; the CPU trial uses adamw")
    return Job.model_validate(d), notes, sampled


class _Tee(EventLog):
    """The trainer's event log, also turned into progress lines for the screen."""

    def __init__(self, job_dir: Path, progress: Progress) -> None:
        super().__init__(job_dir)
        self.progress = progress
        self.records: list[dict[str, Any]] = []

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        ev = super().emit(type, **fields)
        self.records.append(ev)
        if type == "cache" and fields.get("done") in (0, fields.get("total")) or type == "warning":
            self.progress(f"{type}: " + ", ".join(f"{k}={v}" for k, v in fields.items() if k != "folders"))
        elif type == "state" and fields.get("state") in ("loading", "quantized", "attention", "offloading", "checkpointing", "ready"):
            self.progress("state: " + ", ".join(f"{k}={v}" for k, v in fields.items()))
        return ev


class _Replay:
    """A batch source that hands out prepared batches (one bucket, in order) to ``Trainer.train_step``."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.queue = inner, []

    def next_batch(self):
        return self.queue.pop(0) if self.queue else self.inner.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gather(source: Any, need: int, buckets: list[tuple[int, int, int]], limit: int) -> dict[tuple, list]:
    """Batches grouped by bucket, ``need`` of each (or as many as ``limit`` draws gave)."""
    got: dict[tuple, list] = {b: [] for b in buckets}
    for _ in range(limit):
        if all(len(v) >= need for v in got.values()):
            break
        b = source.next_batch()
        key = tuple(b.bucket)
        if key in got and len(got[key]) < need:
            got[key].append(b)
    return got


def bucket_shares(dataset: Any, batches: int) -> dict[tuple, float]:
    """How often each bucket comes up in the job's own batch order (the first ``batches`` batches)."""
    counts: Counter = Counter()
    for i, pb in enumerate(dataset.order.batches()):
        if i >= batches:
            break
        counts[tuple(pb.bucket)] += 1
    total = sum(counts.values()) or 1
    return {b: n / total for b, n in counts.items()}


def _time_steps(trainer: Any, expert: str, n: int, losses: list[float] | None = None) -> list[float]:
    out = []
    for _ in range(n):
        trainer.step = trainer.schedule.first_step_of(expert)
        _sync(trainer.device)
        t0 = time.perf_counter()
        r = trainer.train_step()
        _sync(trainer.device)
        out.append(time.perf_counter() - t0)
        if losses is not None:
            losses.append(r.loss)
    return out


def run_trial(job: Job, *, steps: int = 3, progress: Progress = lambda s: None, keep: Path | None = None,
              device: torch.device | None = None, vram_gib: float | None = None, plan: str = "auto",
              preview: bool = True, profile: bool = False, clips: int | None = None,
              memory_snapshots: Path | None = None, tier: str | None = None,
              preview_steps: int | None = None) -> dict[str, Any]:
    """Run the trial for ``job`` and return its report (see docs/contracts.md, ``wanlora trial --json``).

    ``clips`` caches and trains on at most that many clips per dataset (a big dataset's caching would
    otherwise dominate the trial); the projection scales the measured caching time to every clip.
    ``memory_snapshots`` (CUDA) records each bucket's allocations and writes ``BUCKET.pickle`` there, at
    the out-of-memory error if the bucket ran out (open it at https://pytorch.org/memory_viz).

    ``preview_steps`` renders the preview with that many denoising steps instead of the job's: the memory is the
    job's (every step runs the same shapes), and the preview's time is scaled to the job's steps, so a fit check
    need not wait for a full 25-step preview.

    ``profile`` adds one profiled step per bucket (:mod:`engine.step_profile`): device time per kind of
    kernel, idle time, and the step's useful TFLOP/s."""
    from wanlora.engine.model.fullsize import RandomFullSize
    from wanlora.engine.model.load import load_parts
    from wanlora.engine.model.tiny import ensure_tiny_model
    from wanlora.engine.train.loop import Trainer

    device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    cuda = device.type == "cuda"
    tmp = Path(tempfile.mkdtemp(prefix="wanlora-trial-")) if keep is None else Path(keep)
    tmp.mkdir(parents=True, exist_ok=True)
    job_dir = tmp / "job"
    job_dir.mkdir(exist_ok=True)
    tiny = None if cuda else ensure_tiny_model()
    tjob, notes, sampled = trial_job(job, tmp, tiny_model=tiny, clips=clips)
    if not preview:
        tjob.sample.enabled = False
    if preview_steps is not None and tjob.sample.enabled:
        tjob.sample.steps = min(preview_steps, job.sample.steps)
    if cuda and vram_gib:
        acc.set_vram_limit(device, vram_gib)
    source = RandomFullSize(tmp / "model", tokenizer_from=ensure_tiny_model()) if cuda else load_parts
    events = _Tee(job_dir, progress)
    status = Status(job_dir)
    report: dict[str, Any] = {
        "job": job.job.name, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else "cpu",
        "architecture": "full" if cuda else "tiny",
        "model": ("Wan 2.2 I2V A14B, full size, random weights" if cuda
                  else "the tiny Wan 2.2 I2V architecture (no CUDA here: speed and memory are not representative)"),
        "vram_total_gib": round(acc.memory_budget(device)[1] / GIB, 2) if cuda else None,
        "notes": notes, "torch": torch.__version__, "prompts_in_job": len(job.sample.prompts),
        "tier": tier, "vram_gib": vram_gib, "dop": job.training.dop.enabled,
    }
    trainer = None
    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        progress("loading the model" + (" (random full-size weights on the GPU)" if cuda else " (tiny, CPU)"))
        trainer = Trainer(tjob, job_dir, events, status, device=device, model_source=source,
                          cache_root=tmp / "cache")
        trainer.checkpointing.override = None if plan == "auto" else plan
        report["plan_forced"] = trainer.checkpointing.override
        trainer.setup()
        setup_s = time.perf_counter() - t0
        report.update(_setup_report(trainer, events, setup_s, tjob))
        if sampled:
            report["caching"].update(clips_used=sampled[0], clips_in_job=sampled[1])
        report["plan"] = _plan_report(trainer, events)
        ds = trainer.data
        shares = bucket_shares(ds, tjob.training.steps * tjob.training.gradient_accumulation)
        buckets = sorted(shares, key=lambda b: b[0] * b[1] * b[2])
        accum = tjob.training.gradient_accumulation
        # one warm-up step per expert and bucket absorbs the compile: in 40 of 40 measured (bucket, expert) pairs
        # on H100/H200 the second step already ran at the steady rate (BENCHMARKS §00b)
        warm = 1
        per_expert = (warm + steps) * accum
        need = per_expert * len(trainer.trained) + accum  # + one step after a switch
        progress(f"buckets: {', '.join(_label(b) for b in buckets)}; decoding batches")
        need += accum if profile else 0
        got = _gather(ds, need, buckets, limit=need * len(buckets) * 6 + 20)
        replay = _Replay(ds)
        trainer.data = replay
        rows = []
        for b in buckets:
            rows.append(_measured_bucket(trainer, replay, b, got[b], shares[b], warm, steps, accum, progress,
                                         profile=profile, snapshots=memory_snapshots))
        report["buckets"] = rows
        report.update(_checkpoint_and_preview(trainer, tjob, progress, job_steps=job.sample.steps))
        report["projection"] = project(tjob, report, shares)
        report["memory_ok"] = (not any("oom" in r for r in rows) and "oom" not in (report.get("preview") or {})
                               and all(r.get("oom_fallback") is False and r.get("reserved_fraction", 0) <= acc.RESERVED_LIMIT
                                       for r in rows if "s_per_step" in r)) if cuda else None
    finally:
        if trainer is not None and hasattr(trainer.data, "close"):
            trainer.data.close()
        events.close()
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    report["wrote_to_job"] = False
    return report


def _setup_report(trainer: Any, events: _Tee, setup_s: float, job: Job) -> dict[str, Any]:
    inp = trainer.inputs
    st = inp.latent_stats
    clips = len(trainer.data) if hasattr(trainer.data, "__len__") else None
    cache_ev = [e for e in events.records if e["type"] == "cache"]
    t_lat = [e["ts"] for e in cache_ev if e.get("what") == "latents"]
    t_txt = [e["ts"] for e in cache_ev if e.get("what") == "text"]
    lat_s = (max(t_lat) - min(t_lat)) if len(t_lat) > 1 else 0.0
    txt_s = (max(t_txt) - min(t_txt)) if len(t_txt) > 1 else 0.0
    def ts(state: str) -> float | None:
        return next((e["ts"] for e in events.records if e["type"] == "state" and e.get("state") == state), None)

    loading, planned = ts("loading"), ts("checkpointing")
    return {
        "setup_s": round(setup_s, 2),
        # model + LoRA + quantisation + plan (+ compile wrapping), before data and caching
        "load_s": round(planned - loading, 2) if (loading and planned) else None,
        "caching": {
            "clips": clips, "latents_computed": st.computed if st else 0, "latents_total": st.total if st else 0,
            "latents_s": round(lat_s, 2), "s_per_clip": round(lat_s / st.computed, 3) if st and st.computed else None,
            "text_prompts": inp.text_total, "text_s": round(txt_s, 2),
        },
    }


def _multi_gpu_plan(job: Job, world_size: int) -> dict[str, str]:
    """How this job would split over several GPUs (this run's count and 2/4/8): data or expert-parallel."""
    from wanlora.engine.config.launch import LaunchError, multi_gpu_mode

    out = {}
    for n in sorted({max(1, world_size), 2, 4, 8}):
        try:
            out[str(n)] = "{}: {}".format(*multi_gpu_mode(job, n))
        except LaunchError as e:
            out[str(n)] = f"error: {e}"
    return out


def _plan_report(trainer: Any, events: _Tee) -> dict[str, Any]:
    job = trainer.job
    plan = {"quantization": job.quantization.transformer, "text_encoder_quantization": job.quantization.text_encoder,
            "compile": bool(job.advanced.compile and trainer.device.type == "cuda"),
            "low_vram": job.model.low_vram, "layer_offloading": job.model.layer_offloading,
            "gradient_checkpointing": job.training.gradient_checkpointing, "experts": {},
            "multi_gpu": _multi_gpu_plan(job, trainer.dist.world_size),
            # the attention kernel in force ("flash4", "native" = PyTorch SDPA, ...): speed depends on it
            "attention": next((e["kernel"] for e in events.records
                               if e["type"] == "state" and e.get("state") == "attention"), None)}
    for e in events.records:  # one event per expert and bucket, smallest bucket first
        if e["type"] == "state" and e.get("state") == "checkpointing":
            row = {"tokens": e["tokens"], "checkpointed_blocks": e["checkpointed_blocks"],
                   "saved_attention": e["saved_attention"]}
            ex = plan["experts"].setdefault(e["expert"], {"blocks": e["blocks"], "buckets": []})
            ex["buckets"].append(row)
            # the largest bucket's plan, under the names a single plan had
            ex.update(checkpointed_blocks=row["checkpointed_blocks"], saved_attention=row["saved_attention"],
                      planned_for_tokens=row["tokens"])
    return plan


class _MemoryHistory:
    """CUDA allocation history of one bucket, written as a snapshot (``torch.cuda.memory``) when asked."""

    def __init__(self, folder: Path | None, label: str, device: torch.device) -> None:
        self.path = Path(folder) / f"{label}.pickle" if folder is not None and device.type == "cuda" else None

    def __enter__(self) -> _MemoryHistory:
        if self.path is not None:
            torch.cuda.memory._record_memory_history(max_entries=200_000)
        return self

    def dump(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.cuda.memory._dump_snapshot(str(self.path))

    def __exit__(self, *_exc: object) -> None:
        if self.path is not None:
            torch.cuda.memory._record_memory_history(enabled=None)


def _measured_bucket(trainer: Any, replay: _Replay, bucket: tuple, batches: list, share: float, warm: int,
                     steps: int, accum: int, progress: Progress, profile: bool = False,
                     snapshots: Path | None = None) -> dict[str, Any]:
    """The bucket's row, or, where it runs out of memory even with every block checkpointed, a row saying
    so: the other buckets' figures still reach the report, and the projection says the job cannot run."""
    label = _label(bucket)
    oom = None
    with _MemoryHistory(snapshots, label, trainer.device) as history:
        try:
            row = _bucket_row(trainer, replay, bucket, batches, share, warm, steps, accum, progress, profile=profile)
            history.dump()
            return row
        except torch.OutOfMemoryError as e:
            history.dump()  # while the failed step's tensors are still alive: what filled the card
            oom = str(e).splitlines()[0][:300]
    trainer.free_failed_step()  # outside the handler: the failed step's frames are only gone now
    progress(f"{label}: out of memory even with every block checkpointed")
    return {"bucket": label, "tokens": acc.video_tokens(*bucket), "share": round(share, 4), "oom": oom}


def _bucket_row(trainer: Any, replay: _Replay, bucket: tuple, batches: list, share: float, warm: int, steps: int,
                accum: int, progress: Progress, profile: bool = False) -> dict[str, Any]:
    device = trainer.device
    cuda = device.type == "cuda"
    row: dict[str, Any] = {"bucket": _label(bucket), "tokens": acc.video_tokens(*bucket), "share": round(share, 4)}
    need = (warm + steps) * accum * len(trainer.trained) + accum + (accum if profile else 0)
    if len(batches) < need:
        row["skipped"] = f"only {len(batches)} of {need} batches of this bucket came up in the job's order"
        return row
    replay.queue = list(batches)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    before = {n: trainer.checkpointing.fallen_back(n) for n in trainer.experts}
    experts: dict[str, Any] = {}
    for name in trainer.trained:
        progress(f"{_label(bucket)}: {name}, {warm} warm-up + {steps} timed steps")
        losses: list[float] = []
        w = _time_steps(trainer, name, warm, losses)
        t = _time_steps(trainer, name, steps, losses)
        experts[name] = {"warmup_s": [round(x, 3) for x in w], "s_per_step": round(statistics.median(t), 4),
                         "losses": losses,
                         "s_min": round(min(t), 4), "s_max": round(max(t), 4),
                         "fell_back_to_full_checkpointing": bool(trainer.checkpointing.fallen_back(name) - before[name]),
                         "plan": trainer.checkpointing.in_force(name)}
        progress(f"{_label(bucket)}: {name} {experts[name]['s_per_step']} s/step (warm-up {experts[name]['warmup_s']})")
    switch = None
    if len(trainer.trained) > 1:  # the first step after a switch back to the first expert
        first = trainer.trained[0]
        after = _time_steps(trainer, first, 1)[0]
        switch = round(max(0.0, after - experts[first]["s_per_step"]), 3)
    if profile:  # one more step of the first expert, profiled, after the timed ones
        first = trainer.trained[0]
        progress(f"{_label(bucket)}: profiling one step of {first}")
        row["profile"] = _profile_step(trainer, first, row["tokens"], experts[first]["s_per_step"])
    row["experts"] = experts
    row["s_per_step"] = round(statistics.mean(e["s_per_step"] for e in experts.values()), 4)
    per_step = trainer.job.training.batch_size * accum  # clips per optimizer step: what batch size buys
    row["samples_per_s"] = round(per_step / row["s_per_step"], 4) if row["s_per_step"] > 0 else None
    row["switch_s"] = switch
    row["oom_fallback"] = any(e["fell_back_to_full_checkpointing"] for e in experts.values())
    if cuda:
        total = acc.memory_budget(device)[1]
        row["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 2)
        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / GIB, 2)
        row["reserved_fraction"] = round(torch.cuda.max_memory_reserved(device) / total, 4)
    return row


def _checkpoint_and_preview(trainer: Any, job: Job, progress: Progress, job_steps: int) -> dict[str, Any]:
    """Checkpoint and state write times, then one preview; ``job`` is the trial's job, ``job_steps`` the
    denoising steps the user's job samples with (the preview's time is scaled to them)."""
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    files = trainer.save_checkpoint()
    out["checkpoint_s"] = round(time.perf_counter() - t0, 3)
    out["checkpoint_mib"] = round(sum(p.stat().st_size for p in files) / 2**20, 2)
    t0 = time.perf_counter()
    trainer.save_state()
    out["state_s"] = round(time.perf_counter() - t0, 3)
    out["preview"] = None
    if job.sample.enabled and job.sample.prompts:
        progress(f"preview: {job.sample.width}x{job.sample.height}, {job.sample.num_frames} frames, "
                 f"{job.sample.steps} steps, both experts")
        _sync(trainer.device)
        t0 = time.perf_counter()
        shape = {"width": job.sample.width, "height": job.sample.height, "frames": job.sample.num_frames,
                 "steps": job.sample.steps}
        oom = None
        try:
            paths = trainer.sample_previews()
        except torch.OutOfMemoryError as e:  # a row, not a crash: the buckets' figures still reach the report
            oom = str(e).splitlines()[0][:300]
        if oom is not None:
            trainer.free_failed_step()
            progress("preview: out of memory")
            out["preview"] = {"oom": oom, **shape}
            return out
        _sync(trainer.device)
        took = time.perf_counter() - t0
        out["preview"] = {"s": round(took * job_steps / job.sample.steps, 2), "files": len(paths), **shape}
        if job_steps != job.sample.steps:  # "s" is then the measured time scaled to the job's steps
            out["preview"].update(measured_s=round(took, 2), job_steps=job_steps)
        if trainer.device.type == "cuda":
            out["preview"]["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(trainer.device) / GIB, 2)
    return out


def project(job: Job, report: dict[str, Any], shares: dict[tuple, float]) -> dict[str, Any]:
    """The whole job's wall time from the measured parts (weighted by how often each bucket comes up)."""
    failed = [r["bucket"] for r in report["buckets"] if "oom" in r]
    if failed:
        return {"total_h": None, "why": f"{', '.join(failed)} ran out of memory even with every block checkpointed: "
                "the job cannot run on this GPU as set (drop that bucket, use fewer frames, or follow the OOM ladder "
                "of `wanlora estimate`)"}
    rows = {r["bucket"]: r for r in report["buckets"]}
    measured = {b: rows[_label(b)]["s_per_step"] for b in shares if "s_per_step" in rows.get(_label(b), {})}
    if not measured:
        return {"total_h": None, "why": "no bucket was measured"}
    weight = sum(shares[b] for b in measured)
    mean_step = sum(shares[b] * s for b, s in measured.items()) / weight
    steps = job.training.steps
    schedule = ExpertSchedule.of(job)
    switches = schedule.switches()
    switch_s = statistics.mean([r["switch_s"] for r in rows.values() if r.get("switch_s") is not None] or [0.0])
    warm = sum(sum(e["warmup_s"]) - len(e["warmup_s"]) * e["s_per_step"]
               for r in rows.values() for e in r.get("experts", {}).values())
    saves = steps // max(1, job.save.every)
    n_prompts = report.get("prompts_in_job") or 1
    previews = (steps // max(1, job.sample.every)) if job.sample.enabled else 0
    prev = report.get("preview") or {}
    if "oom" in prev:
        return {"total_h": None, "why": "the preview ran out of memory: the job would fail at its first sample.every "
                "(lower sample.width/height/num_frames, or set sample.enabled = false)"}
    caching = report["caching"]
    # caching is per clip: a trial on a sample of the clips projects it to all of them
    scale = caching.get("clips_in_job", 1) / caching.get("clips_used", 1)
    parts = {
        "train_h": steps * mean_step / 3600,
        "switch_h": switches * switch_s / 3600,
        "compile_h": max(0.0, warm) / 3600,
        "caching_h": (caching["latents_s"] * scale + caching["text_s"]) / 3600,
        "load_h": (report.get("load_s") or 0) / 3600,
        "checkpoints_h": saves * (report["checkpoint_s"] + report["state_s"]) / 3600,
        "previews_h": previews * n_prompts * prev.get("s", 0.0) / 3600,
    }
    out = {k: round(v, 3) for k, v in parts.items()}
    out.update(steps=steps, mean_s_per_step=round(mean_step, 4), switches=switches,
               steps_per_expert=schedule.steps_per_expert(),
               total_h=round(sum(parts.values()), 2))
    return out


def _profile_step(trainer: Any, expert: str, tokens: int, s_per_step: float) -> dict[str, Any]:
    """One profiled step, and the useful work per second of the timed steps (FLOPs without recompute)."""
    from wanlora.engine import step_profile

    out = step_profile.profile_call(lambda: _time_steps(trainer, expert, 1), trainer.device)
    out["useful_tflop"] = out["useful_tflops_per_s"] = None
    if trainer.device.type == "cuda":  # the A14B's FLOPs; the tiny model on the CPU has other widths
        batch = trainer.job.training.batch_size * trainer.job.training.gradient_accumulation
        flops = acc.flops_per_step(tokens, rank=trainer.plans[expert].rank, recompute_fraction=0.0) * batch
        out["useful_tflop"] = round(flops / 1e12, 1)
        out["useful_tflops_per_s"] = round(flops / 1e12 / s_per_step, 1) if s_per_step > 0 else None
    return out


def format_report(r: dict[str, Any]) -> str:
    """The report as the screen shows it."""
    lines = [f"trial of {r['job']} on {r['gpu']} — {r['model']}"]
    if r.get("tier") or r.get("vram_gib"):
        cap = f", acting as a {r['vram_gib']:g} GiB card" if r.get("vram_gib") else ""
        lines.append(f"VRAM tier: {r.get('tier') or 'none'}{cap}")
    lines += [f"note: {n}" for n in r.get("notes", [])]
    c = r["caching"]
    lines.append(f"setup {r['setup_s']} s (load {r.get('load_s')} s); caching {c['latents_computed']} latents in "
                 f"{c['latents_s']} s ({c['s_per_clip']} s each), {c['text_prompts']} prompts in {c['text_s']} s")
    for name, p in r["plan"]["experts"].items():
        per = ", ".join(f"{b['tokens']} tokens: {b['checkpointed_blocks']} ({b['saved_attention']} keep attention)"
                        for b in p.get("buckets", []))
        lines.append(f"plan {name}: blocks checkpointed of {p['blocks']} per bucket: {per}")
    for n, how in r["plan"].get("multi_gpu", {}).items():
        lines.append(f"plan on {n} GPU(s): {how}")
    lines.append(f"{'bucket':<14}{'share':>6}{'s/step':>9}{'warm-up s':>12}{'switch s':>9}{'alloc':>8}{'resv':>8}  note")
    for b in r["buckets"]:
        if "s_per_step" not in b:
            why = f"out of memory even with every block checkpointed: {b['oom']}" if "oom" in b else b.get("skipped", "")
            lines.append(f"{b['bucket']:<14}{b['share']:>6.2f}  {why}")
            continue
        warm = "+".join(f"{sum(e['warmup_s']):.1f}" for e in b["experts"].values())
        note = "OOM → full checkpointing" if b["oom_fallback"] else ""
        lines.append(f"{b['bucket']:<14}{b['share']:>6.2f}{b['s_per_step']:>9.3f}{warm:>12}"
                     f"{str(b['switch_s'] if b['switch_s'] is not None else '-'):>9}"
                     f"{str(b.get('peak_alloc_gib', '-')):>8}{str(b.get('peak_reserved_gib', '-')):>8}  {note}")
    for b in r["buckets"]:
        if p := b.get("profile"):
            kinds = ", ".join(f"{k} {v:.3f}" for k, v in p["kinds_s"].items())
            lines.append(f"profile {b['bucket']}: {p['wall_s']:.3f} s = {kinds}, idle {p['idle_s']:.3f} s; "
                         f"{p['useful_tflop']} TFLOP useful, {p['useful_tflops_per_s']} TFLOP/s")
    lines.append(f"checkpoint pair {r['checkpoint_s']} s ({r['checkpoint_mib']} MiB), state {r['state_s']} s")
    if r.get("preview"):
        p = r["preview"]
        took = f"out of memory: {p['oom']}" if "oom" in p else f"{p['s']} s"
        lines.append(f"preview {p['width']}x{p['height']}x{p['frames']}, {p['steps']} steps: {took}"
                     + (f" (scaled to the job's {p['job_steps']} steps)" if "job_steps" in p else ""))
    pr = r["projection"]
    if pr.get("total_h") is not None:
        lines.append(f"projected: {pr['steps']} steps × {pr['mean_s_per_step']} s = {pr['train_h']} h training + "
                     f"{pr['caching_h']} h caching + {pr['switch_h']} h switches + {pr['compile_h']} h warm-up + "
                     f"{pr['checkpoints_h']} h saves + {pr['previews_h']} h previews = {pr['total_h']} h")
    elif pr.get("why"):
        lines.append(f"no projection: {pr['why']}")
    if r.get("memory_ok") is False:
        lines.append("memory: a bucket went over 92 % reserved or fell back after an OOM — see the table")
    lines.append("nothing was written into the job's folders")
    return "\n".join(lines)
