"""Expert-parallel training: half the processes train the high-noise expert, half the low-noise one, at once.

With 2·k processes and both experts trained (``advanced.multi_gpu``, rule in
:func:`engine.config.launch.multi_gpu_mode`), ranks ``[0, k)`` own ``transformer`` (high noise) and
ranks ``[k, 2k)`` own ``transformer_2`` (low noise) for the whole run: each loads only its expert, keeps
it resident (no ``low_vram`` swap), and ``switch_every`` costs nothing.

**The same run as one process alternating.**  Alternation is a fixed schedule: optimizer step ``s``
belongs to ``expert_for_step(s)`` and trains on global batches ``[s·G, (s+1)·G)`` (``G`` = batches per
optimizer step = processes on that step × ``gradient_accumulation``).  Expert-parallel runs that same
schedule, each group its own expert's steps in their order: in round ``j`` the high group does the
high expert's ``j``-th step (global step :func:`global_step`) and the low group the low expert's
``j``-th, each seeking the data stream to that step's batches and sharing them like data-parallel (group
rank ``q`` of ``k`` takes batches ``s·G + q + k·m``).  Timesteps and noise are keyed per sample position
(:mod:`engine.train.sample_noise`), learning rates by the global step, and each expert's fresh LoRA by
its own seed, so each expert sees exactly the samples, draws, learning rates and updates it would see in
the single-process run with ``gradient_accumulation`` = k × this job's: the LoRA pair is the same up to
float reduction order (the tests: ``atol 1e-4`` on CPU fp32 after Adam steps at lr 1e-2).

**One state.**  What is done is ``steps_done`` per expert (the first ``n`` steps of each expert's
schedule), not a step prefix: mid-cycle (``switch_every`` > 1) expert-parallel has done steps of both
experts that one process would only reach later.  Any trainer resumes from the lowest step not done
(:func:`next_global_step`) and skips those already done, so a state saved here resumes on one process
and vice versa.  Rank 0 writes the state and the LoRA pair; the low group's lead (rank k) sends its
expert's adapter, optimizer state and EMA to rank 0 first (:func:`gather_to_main`).

The schedule's arithmetic (:func:`global_step`, :func:`local_index`, :func:`next_global_step`,
:func:`steps_done_at`) lives in :mod:`engine.train.schedule` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from wanlora.engine.train.distributed import DistContext
from wanlora.engine.train.schedule import global_step, local_index, next_global_step, steps_done_at


# ---------------------------------------------------------------- the groups
@dataclass(frozen=True)
class ExpertGroups:
    """This rank's place in expert-parallel: its expert, its group and the group leads."""

    expert: str  # the expert this rank trains
    experts: tuple[str, ...]  # both, high first
    size: int  # ranks per expert (k)
    group_rank: int  # this rank's index inside its group
    leads: dict[str, int]  # global rank of each expert group's rank 0
    group: Any = None  # this group's ProcessGroup (None when k == 1: nothing to average)

    @property
    def is_lead(self) -> bool:
        return self.group_rank == 0


def make_groups(ctx: DistContext, trained: Sequence[str]) -> ExpertGroups:
    """Split the ``2·k`` ranks into one group per expert (collective: every rank creates every group)."""
    if ctx.world_size < 2 or ctx.world_size % len(trained):
        raise ValueError(f"expert-parallel needs a multiple of {len(trained)} processes, got {ctx.world_size}")
    k = ctx.world_size // len(trained)
    mine = None
    for i, _e in enumerate(trained):
        ranks = list(range(i * k, (i + 1) * k))
        g = dist.new_group(ranks) if k > 1 else None  # new_group is collective: all ranks, same order
        if ctx.rank in ranks:
            mine = g
    idx = ctx.rank // k
    return ExpertGroups(expert=trained[idx], experts=tuple(trained), size=k, group_rank=ctx.rank % k,
                        leads={e: i * k for i, e in enumerate(trained)}, group=mine)


def average_in_group(groups: ExpertGroups, params: Sequence[torch.nn.Parameter]) -> None:
    """Mean of this expert's LoRA grads over its own group (k ranks × batch b ≡ one process × k·b)."""
    if groups.size <= 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1).float() for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=groups.group)
    flat.div_(groups.size)
    off = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[off:off + n].view_as(p.grad))
        off += n


@dataclass
class RoundResult:
    """One expert's step of a round, as every rank learns it: the group's mean loss and its lead's timestep."""

    loss: float
    timestep: float
    dop_loss: float | None


def exchange(ctx: DistContext, groups: ExpertGroups,
             mine: tuple[torch.Tensor, float, torch.Tensor | None] | None) -> dict[str, RoundResult]:
    """Every rank learns what each expert's step of this round gave (one all-reduce of 5 numbers per expert).

    ``mine``: this rank's (mean loss over its micro-batches, first timestep, DOP term) or None when its
    expert has no step left.  Losses are averaged over the group; the timestep is the lead's.
    """
    width = 5  # active, loss, timestep, dop, has_dop
    t = torch.zeros(width * len(groups.experts), dtype=torch.float64, device=ctx.device)
    if mine is not None:
        loss, ts, dop_term = mine
        o = width * groups.experts.index(groups.expert)
        k = groups.size
        t[o + 1] = loss.detach().double() / k
        t[o + 3] = 0.0 if dop_term is None else dop_term.detach().double() / k
        if groups.is_lead:
            t[o], t[o + 2], t[o + 4] = 1.0, float(ts), 0.0 if dop_term is None else 1.0
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    v = t.tolist()
    out = {}
    for i, e in enumerate(groups.experts):
        o = width * i
        if v[o] > 0:
            out[e] = RoundResult(loss=v[o + 1], timestep=v[o + 2], dop_loss=v[o + 3] if v[o + 4] else None)
    return out


def gather_to_main(ctx: DistContext, groups: ExpertGroups, own: dict[str, Any],
                   to_cpu: Callable[[Any], Any]) -> dict[str, Any]:
    """``{expert: snapshot}`` of every expert on rank 0 (``own`` elsewhere): each other group's lead sends its own.

    Point-to-point (``send_object_list``), so only rank 0 and the leads move bytes; every rank calls it.
    """
    out = dict(own) if ctx.is_main else own
    for e, lead in groups.leads.items():
        if lead == 0:
            continue
        dev = ctx.device if ctx.backend == "nccl" else None
        if ctx.rank == lead:
            dist.send_object_list([to_cpu(own[e])], dst=0, device=dev)
        elif ctx.is_main:
            box: list[Any] = [None]
            dist.recv_object_list(box, src=lead, device=dev)
            out[e] = box[0]
    return out


def cpu_copy(obj: Any) -> Any:
    """``obj`` with every tensor copied to the CPU (optimizer states nest dicts and lists)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


def broadcast_in_group(groups: ExpertGroups, params: Sequence[torch.Tensor]) -> None:
    """Every rank of the group gets its lead's values (fresh LoRA init)."""
    if groups.size <= 1:
        return
    src = groups.leads[groups.expert]
    with torch.no_grad():
        for p in params:
            buf = p.data if p.data.is_contiguous() else p.data.contiguous()
            dist.broadcast(buf, src=src, group=groups.group)
            if buf is not p.data:
                p.data.copy_(buf)


def seek(data: Any, batch: int) -> None:
    """Put a batch stream at global ``batch`` (a no-op where it already is, or for a source that cannot seek)."""
    at = getattr(data, "next_global_batch", None)
    if at is None or at == batch:
        return
    st = dict(data.state_dict())
    st["next_batch"] = int(batch)
    data.load_state_dict(st)


def crossed(before: int, after: int, every: int) -> bool:
    """A multiple of ``every`` lies in ``(before, after]`` (a round advances the step count by up to 2)."""
    return every > 0 and after // every > before // every


__all__ = ["global_step", "local_index", "next_global_step", "steps_done_at", "ExpertGroups", "make_groups",
           "average_in_group", "RoundResult", "exchange", "gather_to_main", "cpu_copy", "crossed",
           "broadcast_in_group", "seek"]
