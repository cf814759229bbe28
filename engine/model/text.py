"""Caption → UMT5 embeddings, exactly as ``WanImageToVideoPipeline`` encodes prompts at inference.

Same cleaning (ftfy + html unescape + whitespace), same tokenizer call (pad to 512, truncate), the
encoder sees the attention mask, and rows past the real length are *exact zeros* — a LoRA trained on
differently padded embeddings sees different inputs at inference.  One function so that the text
embedding cache can store its output unchanged.
"""

from __future__ import annotations

import torch

MAX_SEQUENCE_LENGTH = 512


def clean_prompt(text: str) -> str:
    """The pipeline's own ``prompt_clean`` (ftfy is required, as in diffusers)."""
    from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean

    return prompt_clean(text)


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], *, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32, max_length: int = MAX_SEQUENCE_LENGTH) -> torch.Tensor:
    """``[B, max_length, D]`` embeddings; padded rows are zero."""
    cleaned = [clean_prompt(p) for p in prompts]
    tok = tokenizer(cleaned, padding="max_length", max_length=max_length, truncation=True,
                    add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    te_device = next(text_encoder.parameters()).device
    ids, mask = tok.input_ids.to(te_device), tok.attention_mask.to(te_device)
    hidden = text_encoder(ids, mask).last_hidden_state
    keep = mask.gt(0).unsqueeze(-1)  # right padding: every row past the real length becomes exact zeros
    out = torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
    return out.to(device=device or hidden.device, dtype=dtype)
