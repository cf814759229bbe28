"""Differential Output Preservation (DOP): keep the base model's behaviour for the class, learn the trigger.

For each training sample its training caption (trigger substituted and, by default, prepended where it was
missing — ``captions.training_caption``) is rewritten with the trigger replaced by the class word
("sks woman walking" → "person woman walking"), so the preservation prompt never equals the caption the
LoRA trains on: a DOP term on the very prompt being trained would pull the LoRA back to the base model and
cancel what it learns (ai-toolkit refuses DOP without a trigger word for the same reason,
``extensions_built_in/sd_trainer/SDTrainer.py``).  A non-regularization caption that still lacks the
trigger (``job.inject_trigger = false``) gets the class word prepended instead, i.e. what the injected
trigger would have become.  On the same noisy latents and timestep the expert
predicts twice for that class prompt: with the LoRA switched off (the anchor, no grad) and with it on.
``multiplier · MSE(on, off)`` is added to the loss, so the LoRA learns what the trigger means without
changing what the class means.  With the text-embedding cache the class prompts are cached up front,
so DOP needs no text encoder during training (ai-toolkit cannot combine the two).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from wanlora.engine.data.captions import preservation_prompt, sample_preservation_prompt
from wanlora.engine.model.lora import ADAPTER_NAME
from wanlora.engine.train.objective import preservation_loss

__all__ = ["batch_prompts", "lora_disabled", "preservation_prompt", "preservation_term", "sample_preservation_prompt"]


@contextmanager
def lora_disabled(model: torch.nn.Module, adapter: str = ADAPTER_NAME) -> Iterator[None]:
    """Switch off only ``adapter`` on every LoRA layer of ``model`` (other adapters, e.g. a recovery
    adapter on a quantised base, stay on); trainability flags are left untouched."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    saved = []
    for m in model.modules():
        if isinstance(m, BaseTunerLayer) and adapter in m.active_adapters:
            saved.append((m, m._active_adapter))
            m._active_adapter = [a for a in m.active_adapters if a != adapter]
    try:
        yield
    finally:
        for m, active in saved:
            m._active_adapter = active


def preservation_term(model: torch.nn.Module, model_in: torch.Tensor, timestep: torch.Tensor,
                      class_embeddings: torch.Tensor, multiplier: float) -> torch.Tensor:
    """``multiplier · MSE(pred_lora(class), pred_base(class))``; the base prediction carries no gradient."""
    with torch.no_grad(), lora_disabled(model):
        base = model(model_in, timestep=timestep, encoder_hidden_states=class_embeddings, return_dict=False)[0]
    pred = model(model_in, timestep=timestep, encoder_hidden_states=class_embeddings, return_dict=False)[0]
    return preservation_loss(pred, base, multiplier)


def batch_prompts(batch, trigger_word: str, class_word: str, inject: bool = True) -> list[str]:
    """The preservation prompts of a batch (from each sample's raw caption, whatever dropout did)."""
    return [sample_preservation_prompt(s.caption_raw, trigger_word, class_word, inject=inject,
                                       is_regularization=bool(getattr(s, "is_regularization", False)))
            for s in batch.samples]
