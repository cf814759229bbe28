"""Activation checkpointing as a named component: each expert's plan per bucket, its OOM fallbacks, the plan in force.

The trainer plans once after caching (:meth:`CheckpointPlanner.plan`, with the expert alone resident), then
puts the plan of each batch's bucket in force (:meth:`ExpertCheckpointing.use`) and, after a CUDA out of
memory under the speed plan, falls back to checkpointing every block in that bucket only
(:meth:`ExpertCheckpointing.relax`).  ``wanlora trial`` reads what ran (:meth:`ExpertCheckpointing.in_force`).
The arithmetic is :func:`engine.train.acceleration.plan_checkpointing` (and :mod:`engine.train.memory_plan` below it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from wanlora.engine.train import acceleration as acc

Override = Literal["greedy", "frugal"]


class ExpertCheckpointing:
    """One expert's checkpoint plans: one per bucket (by video tokens), the buckets fallen back to full
    checkpointing after an OOM, and the bucket whose plan is in force on the model."""

    def __init__(self, model: torch.nn.Module, plans: Mapping[int, acc.CheckpointPlan], *,
                 save_attention: bool) -> None:
        if not plans:
            raise ValueError("an expert's checkpoint plans need at least one bucket")
        self.model = model
        self._plans = dict(plans)
        self._save_attention = save_attention
        self._frugal: set[int] = set()
        self._at: int | None = None  # the bucket whose plan the model runs under (None: none applied yet)

    @property
    def blocks(self) -> int:
        return len(self.model.blocks)

    @property
    def planned(self) -> dict[int, acc.CheckpointPlan]:
        """The plan made for each bucket, smallest bucket first (before any OOM fallback)."""
        return dict(sorted(self._plans.items()))

    @property
    def fallen_back(self) -> frozenset[int]:
        """The buckets that checkpoint every block since they ran out of memory under their own plan."""
        return frozenset(self._frugal)

    @property
    def bucket_in_force(self) -> int | None:
        return self._at

    def bucket(self, tokens: int) -> int:
        """The planned bucket a batch of ``tokens`` runs under (:func:`acceleration.bucket_key`)."""
        return acc.bucket_key(self._plans, tokens)

    def plan_for(self, tokens: int) -> acc.CheckpointPlan:
        """The plan a batch of ``tokens`` runs under: its bucket's, or every block after an OOM there."""
        key = self.bucket(tokens)
        return acc.CheckpointPlan(self.blocks, 0) if key in self._frugal else self._plans[key]

    def use(self, tokens: int) -> None:
        """Put the plan of the bucket ``tokens`` belongs to in force on the model (a no-op if it is)."""
        key = self.bucket(tokens)
        if self._at == key:
            return
        plan = self.plan_for(key)
        acc.set_checkpointing(self.model, plan.checkpointed, save_attention=self._save_attention,
                              keep_attention=plan.keep_attention)
        self._at = key

    def relax(self) -> int | None:
        """After an OOM: the bucket in force checkpoints every block from now on; that bucket, or None when
        nothing is in force or it already checkpoints every block (then the OOM is real)."""
        key = self._at
        if key is None or key in self._frugal:
            return None
        self._frugal.add(key)
        self._at = None
        self.use(key)
        return key

    def in_force(self) -> dict[str, Any]:
        """What the model runs under now, as the trial reports it (empty before any plan was applied)."""
        key = self._at
        if key is None:
            return {}
        plan = self.plan_for(key)
        return {"planned_for_tokens": key, "checkpointed_blocks": plan.checkpointed,
                "saved_attention": plan.keep_attention}


class CheckpointPlanner:
    """Makes every expert's per-bucket plans and holds them; the trainer delegates all checkpointing here.

    ``override`` forces a plan (``wanlora trial --plan``): ``"greedy"`` checkpoints nothing, ``"frugal"``
    every block without saved attention outputs.
    """

    def __init__(self, device: torch.device, *, enabled: bool, batch_size: int,
                 override: Override | None = None) -> None:
        self.device, self.enabled, self.batch_size, self.override = device, enabled, batch_size, override
        self._experts: dict[str, ExpertCheckpointing] = {}

    def make(self, model: torch.nn.Module, tokens: int, pending_bytes: float = 0.0) -> acc.CheckpointPlan:
        """One bucket's plan: what free memory allows on CUDA, every block elsewhere (or as forced)."""
        blocks = len(model.blocks)
        if self.override == "greedy":
            return acc.CheckpointPlan(0, 0)
        if self.override == "frugal":
            return acc.CheckpointPlan(blocks, 0)
        if not self.enabled:
            return acc.CheckpointPlan(0, 0)
        if self.device.type != "cuda":
            return acc.CheckpointPlan(blocks, blocks)
        return acc.plan_checkpointing(model, tokens, self.batch_size, self.device, save_attention=True,
                                      pending_bytes=pending_bytes)

    def plan(self, name: str, model: torch.nn.Module, buckets: Iterable[int],
             pending_bytes: float = 0.0) -> ExpertCheckpointing:
        """Plan every bucket of expert ``name`` and put the largest bucket's plan in force."""
        keys = sorted(set(buckets)) or [0]
        plans = {tokens: self.make(model, tokens, pending_bytes) for tokens in keys}
        held = self._experts[name] = ExpertCheckpointing(model, plans, save_attention=self.device.type == "cuda")
        held.use(keys[-1])
        return held

    def get(self, name: str) -> ExpertCheckpointing | None:
        """Expert ``name``'s plans, or None when it was not planned (layer offloading checkpoints every block)."""
        return self._experts.get(name)

    def use(self, name: str, tokens: int) -> None:
        """Put the plan for a batch of ``tokens`` in force on expert ``name`` (a no-op when it has none)."""
        if (held := self._experts.get(name)) is not None:
            held.use(tokens)

    def relax(self, name: str) -> int | None:
        """After an OOM on expert ``name``: full checkpointing in the bucket in force (see
        :meth:`ExpertCheckpointing.relax`); None when there is nothing to relax."""
        held = self._experts.get(name)
        return None if held is None else held.relax()

    def in_force(self, name: str) -> dict[str, Any]:
        held = self._experts.get(name)
        return {} if held is None else held.in_force()

    def fallen_back(self, name: str) -> frozenset[int]:
        held = self._experts.get(name)
        return frozenset() if held is None else held.fallen_back
