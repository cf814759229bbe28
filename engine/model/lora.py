"""One peft LoRA adapter per expert, on the Linear layers ``target.modules`` names.

The adapter is attached with diffusers' ``add_adapter`` (peft under the hood), so the trained expert is
the same object the pipeline would run, and its state dict is what ``lora_format`` converts.
"""

from __future__ import annotations

import warnings

import torch

ADAPTER_NAME = "default"

# diffusers module names inside each WanTransformerBlock, per ``target.modules`` choice.
ATTN_MODULES = tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0"))
FFN_MODULES = ("ffn.net.0.proj", "ffn.net.2")
MODULE_SETS: dict[str, tuple[str, ...]] = {
    "attn+ffn": ATTN_MODULES + FFN_MODULES,
    "attn": ATTN_MODULES,
    "ffn": FFN_MODULES,
}


def target_regex(modules: str) -> str:
    """A peft ``target_modules`` regex (full match) restricted to ``blocks.N.<module>``."""
    try:
        names = MODULE_SETS[modules]
    except KeyError:
        raise ValueError(f"unknown target.modules {modules!r}; expected one of {', '.join(MODULE_SETS)}") from None
    alt = "|".join(n.replace(".", r"\.") for n in names)
    return rf"blocks\.\d+\.({alt})"


def add_lora(transformer, rank: int, alpha: float, modules: str = "attn+ffn",
             dtype: torch.dtype | None = None) -> list[torch.nn.Parameter]:
    """Attach a fresh LoRA (A random, B zero: the expert starts unchanged) and return its trainable params.

    The base weights are frozen.  ``dtype`` is what the LoRA params are kept in — the trainer's master
    precision (``advanced.lora_master_dtype``: fp32 by default, so AdamW updates far below bf16's resolution
    still land); ``None`` keeps the base dtype.  Whatever it is, the LoRA matmuls run in the dtype of their
    input (:func:`compute_in_input_dtype`): bf16 activations on CUDA stay bf16.
    """
    from peft import LoraConfig

    transformer.requires_grad_(False)
    cfg = LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=target_regex(modules),
                     init_lora_weights=True)
    with warnings.catch_warnings():
        if _wrap_fp8_bases(transformer, cfg):  # peft warns about any layer type it does not ship; ours is handled
            warnings.filterwarnings("ignore", message="Unsupported layer type", category=UserWarning)
        transformer.add_adapter(cfg, adapter_name=ADAPTER_NAME)
    params = [p for n, p in transformer.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
        if dtype is not None and p.dtype != dtype:
            p.data = p.data.to(dtype)
    if not params:
        raise RuntimeError(f"no Linear layer matched target.modules={modules!r}; is this a Wan transformer?")
    compute_in_input_dtype(transformer)
    return params


class InputDtypeLinear(torch.nn.Linear):
    """A LoRA A or B matrix that computes in the dtype of its input: the (fp32) master weight is cast for the
    matmul, and autograd casts its gradient back, so the weight's ``.grad`` is fp32 as the optimizer needs.

    peft would instead cast the input to the weight's dtype: with fp32 masters the whole LoRA branch would run
    in fp32, and autograd would keep an fp32 copy of every adapted layer's input for backward (the
    ``[tokens, 5120]`` activations, twice the bytes of the bf16 input the base layer already keeps).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        b = self.bias if self.bias is None or self.bias.dtype == x.dtype else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, w, b)


def compute_in_input_dtype(transformer) -> int:
    """Every peft LoRA layer of ``transformer`` runs its adapters in its input's dtype (:class:`InputDtypeLinear`)
    and stops casting the input to the adapter's dtype.  Idempotent; call it again after another adapter is
    loaded into the same layers (a preview's accelerator LoRA).  Returns how many A/B matrices it switched."""
    from peft.tuners.lora.layer import LoraLayer

    n = 0
    for m in transformer.modules():
        if not isinstance(m, LoraLayer):
            continue
        m.cast_input_dtype_enabled = False  # peft's own switch (peft.helpers.disable_input_dtype_casting)
        for mats in (m.lora_A, m.lora_B):
            for lin in mats.values():
                if type(lin) is torch.nn.Linear:
                    lin.__class__ = InputDtypeLinear  # same parameters and names: state dicts are unchanged
                    n += 1
    return n


def _wrap_fp8_bases(transformer, cfg) -> bool:
    """An expert loaded from an fp8-scaled file already holds :class:`Fp8Linear` bases: let peft wrap them too."""
    from wanlora.engine.model.fp8_linear import Fp8Linear

    if not any(isinstance(m, Fp8Linear) for m in transformer.modules()):
        return False
    from peft.tuners.lora.layer import Linear as LoraLinear

    cfg._register_custom_module({Fp8Linear: LoraLinear})
    return True


def lora_state_dict(transformer) -> dict[str, torch.Tensor]:
    """The adapter's weights with peft's names minus the adapter name (``blocks.0.attn1.to_q.lora_A.weight``)."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)


def load_lora_state_dict(transformer, state: dict[str, torch.Tensor]) -> None:
    """Copy weights (as returned by :func:`lora_state_dict`) back into the attached adapter, in place.

    In-place copies keep the Parameter objects (and so the optimizer's references) intact.
    """
    params = dict(transformer.named_parameters())
    missing = []
    for key, value in state.items():
        name = key.replace(".lora_A.weight", f".lora_A.{ADAPTER_NAME}.weight").replace(
            ".lora_B.weight", f".lora_B.{ADAPTER_NAME}.weight")
        p = params.get(name)
        if p is None:
            missing.append(key)
            continue
        with torch.no_grad():
            p.copy_(value.to(p.device, p.dtype))
    if missing:
        raise KeyError(f"LoRA state does not fit this model ({len(missing)} unknown keys, e.g. {missing[0]})")
