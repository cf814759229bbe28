"""Exponential moving average of one expert's LoRA weights.

After every optimizer step of its expert: ``shadow ← decay·shadow + (1 − decay)·weight`` (fp32 shadows,
whatever the LoRA's dtype).  The shadows are saved in the resumable state and, when ``training.ema`` is
on, they are what the LoRA files contain (their metadata says ``weights = ema``) and what previews show.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from wanlora.engine.model.lora import ADAPTER_NAME


def ema_update(shadow: torch.Tensor, weight: torch.Tensor, decay: float) -> torch.Tensor:
    """In place: ``shadow = decay·shadow + (1 − decay)·weight``; returns ``shadow``."""
    return shadow.mul_(decay).add_(weight.detach().to(shadow.dtype), alpha=1.0 - decay)


def state_key(param_name: str, adapter: str = ADAPTER_NAME) -> str:
    """peft parameter name → the key :func:`engine.model.lora.lora_state_dict` uses (adapter name removed)."""
    return param_name.replace(f".{adapter}.", ".")


class LoraEma:
    """The shadows of every LoRA parameter of ``model`` (keys as in ``lora_state_dict``)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be between 0 and 1, got {decay}")
        self.decay = float(decay)
        self.params = {state_key(n): p for n, p in model.named_parameters() if "lora_" in n}
        self.shadow = {k: p.detach().float().clone() for k, p in self.params.items()}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        for k, p in self.params.items():
            s = self.shadow[k]
            if s.device != p.device:
                self.shadow[k] = s = s.to(p.device)
            ema_update(s, p, self.decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        unknown = set(state) - set(self.shadow)
        if unknown:
            raise KeyError(f"EMA state does not fit this model ({len(unknown)} unknown keys, e.g. {min(unknown)})")
        for k, v in state.items():
            self.shadow[k] = v.detach().float().to(self.params[k].device).clone()

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Temporarily put the shadows into the model (previews show what the files will contain)."""
        saved = {k: p.detach().clone() for k, p in self.params.items()}
        try:
            with torch.no_grad():
                for k, p in self.params.items():
                    p.copy_(self.shadow[k].to(p.device, p.dtype))
            yield
        finally:
            with torch.no_grad():
                for k, p in self.params.items():
                    p.copy_(saved[k])


# ---------------------------------------------------------------- the trainer's use of it
EMA_SUFFIX = "@ema"  # adapters "<expert>@ema" in the resumable state hold the shadows


def attach(experts: dict, decay: float) -> None:
    """One :class:`LoraEma` per expert, kept in ``Expert.extra["ema"]``."""
    for ex in experts.values():
        ex.extra["ema"] = LoraEma(ex.model, decay)


def of(ex) -> LoraEma | None:
    return ex.extra.get("ema")


def state_adapters(experts: dict) -> dict[str, dict[str, torch.Tensor]]:
    """The shadows as extra adapters of the resumable state (``<expert>@ema``)."""
    return {f"{n}{EMA_SUFFIX}": e.state_dict() for n, ex in experts.items() if (e := of(ex)) is not None}


def restore(experts: dict, adapters: dict[str, dict[str, torch.Tensor]], warn) -> None:
    """Load the shadows from a resumed state; a state saved without EMA starts them from the weights."""
    for n, ex in experts.items():
        e = of(ex)
        if e is None:
            continue
        saved = adapters.get(f"{n}{EMA_SUFFIX}")
        if saved is None:
            warn(f"training.ema: the resumed state has no EMA for {n}; it starts from the current weights")
            e.shadow = {k: p.detach().float().clone() for k, p in e.params.items()}
        else:
            e.load_state_dict(saved)


def file_weights(ex, live: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What a LoRA file holds: the EMA shadows when EMA is on (and metadata saying so), else ``live``."""
    e = of(ex)
    if e is None:
        return live, {"weights": "live"}
    return e.state_dict(), {"weights": "ema", "ema_decay": repr(e.decay)}
