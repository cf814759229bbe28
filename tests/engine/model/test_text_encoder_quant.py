"""The text encoder's fp8 weight-only mode: one byte per weight, embeddings close to the full-precision ones."""

import torch
from wanlora.engine.model.folder import load_text_encoder
from wanlora.engine.model.fp8_linear import Fp8Linear
from wanlora.engine.model.quant import model_bytes
from wanlora.engine.model.text import encode_prompts


def test_fp8_text_encoder_keeps_embeddings_and_halves_linear_bytes(tiny_model):
    cpu = torch.device("cpu")
    tok, ref = load_text_encoder(tiny_model, torch.float32, cpu)
    _tok, q = load_text_encoder(tiny_model, torch.float32, cpu, quant="fp8")
    linears = [m for m in q.modules() if isinstance(m, Fp8Linear)]
    assert linears and all(not m.fp8_compute for m in linears)  # weight-only: matmuls in the input's dtype
    assert model_bytes(q) < model_bytes(ref)
    prompts = ["a red square moving right", ""]
    a = encode_prompts(tok, ref, prompts, device=cpu, dtype=torch.float32)
    b = encode_prompts(tok, q, prompts, device=cpu, dtype=torch.float32)
    assert a.shape == b.shape
    assert float((a - b).norm() / a.norm()) < 0.1
    assert torch.equal(b[0, 7:], torch.zeros_like(b[0, 7:]))  # padded rows stay exact zeros
