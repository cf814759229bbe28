"""Modules built on ``meta`` get their storage where placement puts them: the trial's random full-size model.

A module whose parameters are still on ``meta`` holds no memory; :func:`materialize_` gives each one random
storage on the device the placement code moves it to (``engine.model.quant`` calls it block by block), so the
random model's placement order and peak memory are those of a loaded checkpoint.  ``engine.model.fullsize``
builds the modules; this is the one piece it shares with ``quant``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _init_(t: torch.Tensor, owner: nn.Module, qualname: str, pname: str) -> None:
    """Weights as a fresh model would draw them (Linear/Conv: kaiming; norms: 1; LoRA B: 0)."""
    path = f".{qualname}."
    if ".lora_B." in path:
        t.zero_()
    elif ".lora_A." in path or (pname == "weight" and t.dim() >= 2):
        nn.init.kaiming_uniform_(t, a=math.sqrt(5))
    elif pname == "bias" or "shift" in pname:
        t.zero_()
    elif t.dim() == 1:  # norm scales
        t.fill_(1.0)
    else:  # tables such as scale_shift_table, embeddings
        t.normal_(0.0, 1.0 / math.sqrt(t.shape[-1]))


@torch.no_grad()
def materialize_(module: nn.Module, device: torch.device | str, recurse: bool = True) -> int:
    """Give every ``meta`` parameter of ``module`` (only its own ones without ``recurse``) random storage on
    ``device``, in place.

    ``Parameter`` objects are kept (their storage is swapped in), so optimizers and LoRA param lists built on the
    meta model stay valid.  Returns how many parameters were materialised (0 for an ordinary module).
    """
    count = 0
    for qualname, mod in module.named_modules() if recurse else [("", module)]:
        for pname, p in mod._parameters.items():
            if p is None or not p.is_meta:
                continue
            t = torch.empty(p.shape, dtype=p.dtype, device=device)
            _init_(t, mod, qualname, pname)
            torch.utils.swap_tensors(p, nn.Parameter(t, requires_grad=p.requires_grad))
            count += 1
        for bname, b in mod._buffers.items():
            if b is not None and b.is_meta:
                mod._buffers[bname] = torch.zeros(b.shape, dtype=b.dtype, device=device)
    return count


def has_meta(module: nn.Module) -> bool:
    """Whether any parameter or buffer of ``module`` still has no storage."""
    return any(p.is_meta for p in module.parameters()) or any(b.is_meta for b in module.buffers())
