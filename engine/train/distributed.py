"""Data parallel training over torch.distributed: one process per GPU, launched by torchrun.

The same job file runs on 1 GPU (plain ``python -m wanlora.engine.train``; every helper here is then a no-op)
or on N GPUs / several nodes (``python -m wanlora.engine.train.torchrun … -m wanlora.engine.train JOB_DIR``; the launch
line comes from :mod:`engine.config.launch`).

Design, and why:

- **Ranks see disjoint shards of one global data order** (global batch g → rank g % world), so N ranks
  with batch b step through exactly the batches one process with gradient accumulation N (or batch N·b,
  when every clip shares a bucket) would.  Timesteps and noise are drawn per sample from its global
  position (:mod:`engine.train.sample_noise`), so the result does not depend on how samples are split.
- **Gradients: a manual bucketed all-reduce of the LoRA grads after backward**, not DDP.  Only the LoRA
  (~77 M params for A14B at r16, 150 MB in bf16) is trained; its all-reduce takes ~1 ms on NVLink against
  a ~2 s step, so DDP's overlap with backward buys nothing measurable, while DDP would cost: an init
  broadcast of the whole module (28 GB of frozen base per expert), one reducer per expert (two experts
  alternate; only the active one has grads), ``no_sync`` juggling for gradient accumulation, and hooks
  that fight ``low_vram`` expert swapping and per-block compile.  One all-reduce per optimizer step (in
  fp32, averaged) after all micro-batches is exact and simple.
- **Rank 0 decides, everyone acts at the same step**: control flags (read by rank 0 only) and stop
  signals (any rank) are merged with one tiny all-reduce per step, so pause / save-now / SIGTERM act on
  all ranks at the same step boundary.  Only rank 0 writes events, checkpoints and states.
- **Optional FSDP2 sharding of the frozen base** (``advanced.fsdp``): each frozen block Linear is
  ``fully_shard``-ed on its own (the blocks mix bf16 Linears with fp32 norms, and one FSDP group needs
  one dtype); the LoRA params are ``ignored_params`` so they stay replicated plain tensors that the same
  all-reduce averages, and checkpoints/resume are unchanged.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from wanlora.engine.config import jobdir
from wanlora.engine.config.launch import CPU_PROCS_ENV, nvls_off_env
from wanlora.engine.train.control import RunLock, StopSignal
from wanlora.engine.train.events import EventLog, Heartbeat, Status

BUCKET_BYTES = 64 << 20  # fp32 bytes per all-reduce bucket
_STOP_CODES = {"SIGTERM": 1, "SIGINT": 2}
_RUN_TOKEN = ".dist_run"  # written by rank 0: lets other nodes tell a shared job folder from a local one


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: its ranks and its device; world 1 = plain single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Global rank 0: the only writer of events, checkpoints and states."""
        return self.rank == 0

    @property
    def is_node_lead(self) -> bool:
        return self.local_rank == 0

    @property
    def node_rank(self) -> int:
        return self.rank // max(1, self.local_world_size)


SINGLE = DistContext()


def launched_by_torchrun(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return "RANK" in env and "WORLD_SIZE" in env and "LOCAL_RANK" in env


def init(device: torch.device | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Without those variables: a single process on ``device`` (default: cuda if present).  With them:
    backend nccl on CUDA (one GPU per local rank), gloo on CPU (``device=cpu``, ``--cpu``, or
    ``WANLORA_CPU_PROCS`` set by the CPU launcher).  ``timeout_s`` bounds a collective (rank 0 may spend
    a while saving a checkpoint while the others wait).
    """
    if not launched_by_torchrun():
        if device is None:
            device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return DistContext(device=device)
    for k, v in nvls_off_env().items():
        os.environ.setdefault(k, v)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    cpu = (device is not None and device.type == "cpu") or bool(os.environ.get(CPU_PROCS_ENV)) \
        or not torch.cuda.is_available()
    if cpu:
        dev, backend = torch.device("cpu"), "gloo"
    else:
        dev, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        kw: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
        if backend == "nccl":
            kw["device_id"] = dev  # binds the communicator now: no lazy init inside the first step
        dist.init_process_group(**kw)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world,
                       device=dev, backend=backend)


def shutdown(ctx: DistContext) -> None:
    """Leave the group.  On gloo, meet the other ranks first (bounded): a rank tearing its connections
    down while a peer still uses them can abort the peer at exit.  Skipped while an exception is in
    flight (the other ranks may be stuck in a collective; torchrun ends them)."""
    if not (ctx.enabled and dist.is_initialized()):
        return
    if ctx.backend == "gloo" and sys.exc_info()[0] is None:
        try:
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        except RuntimeError:
            pass
    dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


# ---------------------------------------------------------------- gradients and values
def mean_value(ctx: DistContext, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over ranks (the loss every rank logs and checks for NaN: the same number)."""
    if not ctx.enabled:
        return value
    v = value.detach().float().reshape(1).clone()
    dist.all_reduce(v, op=dist.ReduceOp.SUM)
    return (v / ctx.world_size).reshape(())


def _buckets(tensors: Sequence[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    out: list[list[torch.Tensor]] = []
    cur: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * 4
        if cur and (size + nbytes > limit or t.device != cur[0].device):
            out.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += nbytes
    if cur:
        out.append(cur)
    return out


def average_gradients(ctx: DistContext, params: Iterable[nn.Parameter], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Replace each param's grad by its mean over ranks: N ranks × batch b ≡ one process × batch N·b.

    Call once per optimizer step, after the last micro-batch's backward, with the *active* expert's LoRA
    params (the same list, in the same order, on every rank).  Reduced in fp32 whatever the grad dtype;
    all buckets are in flight at once.  A missing grad counts as zeros (and becomes one).
    """
    if not ctx.enabled:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    pending = []
    for bucket in _buckets(grads, bucket_bytes):
        flat = torch.cat([g.reshape(-1).float() for g in bucket])
        pending.append((bucket, flat, dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True)))
    for bucket, flat, work in pending:
        work.wait()
        flat.div_(ctx.world_size)
        off = 0
        for g in bucket:
            n = g.numel()
            g.copy_(flat[off:off + n].view_as(g))
            off += n


@torch.no_grad()
def broadcast_params(ctx: DistContext, params: Iterable[torch.Tensor], src: int = 0) -> None:
    """Give every rank ``src``'s values (fresh LoRA init: ranks must start identical)."""
    if not ctx.enabled:
        return
    for p in params:
        buf = p.data if p.data.is_contiguous() else p.data.contiguous()
        dist.broadcast(buf, src=src)
        if buf is not p.data:
            p.data.copy_(buf)


def broadcast_object(ctx: DistContext, obj: Any, src: int = 0) -> Any:
    """``src``'s picklable ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=ctx.device if ctx.backend == "nccl" else None)
    return box[0]


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=ctx.device, dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# ---------------------------------------------------------------- control in lockstep
def agree_on_control(ctx: DistContext, flags: Sequence[str], stop: str | None) -> tuple[list[str], str | None]:
    """Merge rank 0's control flags and any rank's stop signal, so every rank acts at the same step.

    ``flags``: what rank 0 took from ``control/`` (other ranks pass ``[]``); ``stop``: this rank's
    ``StopSignal.requested``.  One all-reduce(MAX) of ``len(FLAGS) + 1`` ints.
    """
    if not ctx.enabled:
        return list(flags), stop
    vals = [1 if (f in flags and ctx.is_main) else 0 for f in jobdir.FLAGS] + [_STOP_CODES.get(stop or "", 0)]
    t = torch.tensor(vals, device=ctx.device, dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    got = t.tolist()
    agreed = [f for f, v in zip(jobdir.FLAGS, got[:-1], strict=True) if v]
    names = {v: k for k, v in _STOP_CODES.items()}
    return agreed, names.get(got[-1])  # the group's answer, the same on every rank


class GroupStopSignal(StopSignal):
    """SIGTERM/SIGINT handling for a rank of a torchrun group.

    torchrun starts each worker in its own session, so ``kill -TERM -PGID`` reaches a worker through
    torchrun's forwarded copy; a signal sent to the worker itself (``kill PID``, a process-tree kill) can
    come as well.  The same signal twice within a while is one request, not the "second signal: die now"
    escape; the while is long (30 s), as a forwarded copy can lag on a loaded machine (a stop that must be
    forced has the daemon's SIGKILL).
    """

    DEBOUNCE_S = 30.0

    def __init__(self) -> None:
        super().__init__()
        self._first_at = 0.0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested == name and time.monotonic() - self._first_at < self.DEBOUNCE_S:
            return
        if self.requested is None:
            self._first_at = time.monotonic()
        super()._handle(signum, frame)


# ---------------------------------------------------------------- who writes what
class QuietEvents:
    """The event log of a rank that does not write ``events.jsonl``: warnings and errors go to stderr."""

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        if type in ("warning", "error"):
            print(f"[rank {self.ctx.rank}] {type}: {fields.get('message', fields)}", file=sys.stderr, flush=True)
        return {"type": type, **fields}

    def close(self) -> None:
        pass


class QuietStatus:
    """The status of a rank that does not write ``status.json`` (keeps the fields for the loop)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def update(self, **fields: Any) -> None:
        self.data.update(fields)


class GroupLock:
    """``run.lock`` for a group: global rank 0 holds it; on other nodes, local rank 0 holds the node's own
    copy when the job folder is node-local (a shared folder is recognised by rank 0's run token).

    :meth:`acquire` is collective: False on every rank when any needed lock is held by another trainer.
    """

    def __init__(self, ctx: DistContext, job_dir: Path) -> None:
        self.ctx, self.job_dir = ctx, Path(job_dir)
        self.lock: RunLock | None = None
        self.node_local = False  # this node lead holds a lock of its own (its folder is not rank 0's)

    def acquire(self) -> bool:
        ctx = self.ctx
        ok = True
        if ctx.is_main:
            self.lock = RunLock(self.job_dir)
            ok = self.lock.acquire()
        token = broadcast_object(ctx, uuid.uuid4().hex if ctx.is_main else None)
        if ctx.is_main and ok:
            jobdir.write_text_atomic(self.job_dir / _RUN_TOKEN, token)
        if not any_rank(ctx, not ok):
            barrier(ctx)
            if ctx.is_node_lead and not ctx.is_main:
                ok = self._node_lock(token)
        ok = not any_rank(ctx, not ok)
        if not ok:
            self.release()
        return ok

    def _node_lock(self, token: str) -> bool:
        try:
            shared = (self.job_dir / _RUN_TOKEN).read_text().strip() == token
        except OSError:
            shared = False
        if shared:
            return True
        self.lock = RunLock(self.job_dir)
        self.node_local = self.lock.acquire()
        return self.node_local

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def load_everywhere(ctx: DistContext, path: Path | str, load: Callable[[Path], Any]) -> Any:
    """``load(path)`` on every rank: read locally when every rank sees ``path`` (one machine, or a shared
    job folder), else read on rank 0 and broadcast (a node-local job folder on another node)."""
    path = Path(path)
    if not any_rank(ctx, not path.exists()):
        return load(path)
    return broadcast_object(ctx, load(path) if ctx.is_main else None)


@dataclass
class RunGroup:
    """What one trainer process holds for its run: its place in the group, the lock, its writers, signals."""

    ctx: DistContext
    lock: RunLock | GroupLock
    events: EventLog | QuietEvents
    status: Status | QuietStatus
    heartbeat: Heartbeat | None
    stop: StopSignal

    def close(self) -> None:
        self.stop.uninstall()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.events.close()
        self.lock.release()
        shutdown(self.ctx)


def open_run(job_dir: Path, device: torch.device | None = None) -> RunGroup | None:
    """Join the group (if launched by torchrun), take the run lock, and set up who writes what.

    Rank 0 writes ``events.jsonl``/``status.json`` (with the heartbeat); a node lead holding its own
    node-local folder's lock keeps that folder's ``status.json`` alive; every other rank is quiet.
    None (on every rank) when another trainer holds the lock.
    """
    ctx = init(device)
    lock: RunLock | GroupLock = GroupLock(ctx, job_dir) if ctx.enabled else RunLock(job_dir)
    if not lock.acquire():
        shutdown(ctx)
        return None
    events: EventLog | QuietEvents = EventLog(job_dir) if ctx.is_main else QuietEvents(ctx)
    writes_status = ctx.is_main or (isinstance(lock, GroupLock) and lock.node_local)
    status: Status | QuietStatus = Status(job_dir) if writes_status else QuietStatus()
    heartbeat = None
    if writes_status:
        heartbeat = Heartbeat(status, events if ctx.is_main else None, jobdir.HEARTBEAT_INTERVAL_S).start()  # type: ignore[arg-type]
    stop = (GroupStopSignal() if ctx.enabled else StopSignal()).install()
    return RunGroup(ctx, lock, events, status, heartbeat, stop)


# ---------------------------------------------------------------- FSDP2
def shard_frozen_base(ctx: DistContext, model: nn.Module, trainable: Iterable[nn.Parameter]) -> int:
    """FSDP2-shard every frozen ``nn.Linear`` inside the transformer blocks across the ranks.

    Each rank keeps 1/world of those weights and all-gathers a layer just before it runs (again in
    backward, for the input gradient the LoRA layers upstream need).  ``trainable`` (the LoRA params)
    are ignored by FSDP: replicated, averaged by :func:`average_gradients`, saved as before.  fp8 layers
    keep their weights in buffers, which FSDP does not shard.  Returns how many layers were sharded.
    """
    if not ctx.enabled:
        return 0
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    ignored = set(trainable)
    n = 0
    for name, mod in model.named_modules():
        if not name.startswith("blocks.") or type(mod) is not nn.Linear:
            continue
        if any(p.requires_grad for p in mod.parameters(recurse=False)):
            continue
        fully_shard(mod, mesh=mesh, reshard_after_forward=True, ignored_params=ignored)
        n += 1
    _place_unsharded(model, ctx.device)
    return n


def _place_unsharded(model: nn.Module, device: torch.device) -> None:
    """Move what FSDP did not take (norms, embeddings, LoRA, buffers) to ``device``, keeping Parameter
    objects (the experts may have been loaded on the CPU so that no GPU ever holds a whole expert)."""
    from torch.distributed.tensor import DTensor

    with torch.no_grad():
        for mod in model.modules():
            for p in mod._parameters.values():
                if p is not None and not isinstance(p, DTensor) and p.device != device:
                    p.data = p.data.to(device)
            for k, b in mod._buffers.items():
                if b is not None and not isinstance(b, DTensor) and b.device != device:
                    mod._buffers[k] = b.to(device)


__all__ = [
    "DistContext", "SINGLE", "init", "shutdown", "barrier", "mean_value", "average_gradients",
    "broadcast_params", "broadcast_object", "any_rank", "agree_on_control", "GroupStopSignal",
    "QuietEvents", "QuietStatus", "GroupLock", "shard_frozen_base", "launched_by_torchrun", "load_everywhere",
    "RunGroup", "open_run",
]
