"""low_vram previews in a training run move the trained experts through their parking (a switch copies nothing
back to the host), an expert loaded only for the preview by ``Module.to``, and afterwards the expert that was
training is back on the GPU through the same parking."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from wanlora.engine.config.experts import HIGH, LOW
from wanlora.engine.train import previews

GPU = torch.device("meta")  # stands for the GPU on a CPU-only machine


class _Parking:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def park(self) -> None:
        self.log.append(f"park {self.name}")

    def unpark(self, device: torch.device) -> None:
        self.log.append(f"unpark {self.name} {device.type}")


def test_previews_switch_trained_experts_through_their_parking() -> None:
    log: list[str] = []
    experts = {n: SimpleNamespace(parking=_Parking(n, log)) for n in (HIGH, LOW)}
    models = {n: nn.Linear(2, 2) for n in (HIGH, LOW)}
    place = previews._parking_placer(experts, models, GPU)
    place(HIGH)  # each preview starts on the high-noise expert
    place(LOW)  # the boundary: high leaves before low comes in
    assert log == [f"park {LOW}", f"unpark {HIGH} meta", f"park {HIGH}", f"unpark {LOW} meta"]

    log.clear()  # afterwards: the expert that was training goes back through its parking, the other is parked
    placement = {HIGH: GPU, LOW: torch.device("cpu")}
    previews._restore_experts(models, [], {HIGH: True, LOW: True}, placement, place)
    assert log == [f"park {LOW}", f"unpark {HIGH} meta"]


def test_an_expert_loaded_only_for_the_preview_moves_by_module_to() -> None:
    log: list[str] = []
    experts = {HIGH: SimpleNamespace(parking=_Parking(HIGH, log))}  # only the high-noise expert is trained
    # low: base weights loaded for the preview, no parking: it moves with Module.to
    models = {HIGH: nn.Linear(2, 2), LOW: SimpleNamespace(to=lambda d: log.append(f"to {LOW} {torch.device(d).type}"))}
    place = previews._parking_placer(experts, models, GPU)
    place(LOW)
    assert log == [f"park {HIGH}", f"to {LOW} meta"]
    place(HIGH)
    assert log[2:] == [f"to {LOW} cpu", f"unpark {HIGH} meta"]
