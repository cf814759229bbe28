"""fp32 master weights for the LoRA (``advanced.lora_master_dtype``): with a bf16 base and bf16 compute, AdamW at
lr 1e-5 still moves the LoRA as exact arithmetic does, while the LoRA matmuls stay in bf16.

With bf16 masters (earlier builds on CUDA) most updates round away: a LoRA-A entry of ~0.1 has a bf16 spacing of
~5e-4, fifty times a 1e-5 step.  The CPU normally trains in fp32, so the bf16 compute is forced here; the same
check runs on CUDA (fused AdamW) with ``pytest -m gpu``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from wanlora.engine.config.io import load_job

from tests.engine.conftest import make_job_dir

LR, WD, STEPS = 1e-5, 1e-2, 500
BETAS, EPS = (0.9, 0.999), 1e-8
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
               not torch.cuda.is_available(), reason="needs CUDA")])]


def _trainer(tmp: Path, clips: Path, tiny_model: Path, device: str, master: str):
    """The real trainer on the tiny model, its base and compute in bf16 (the CUDA setting, forced on the CPU)."""
    from wanlora.engine.train.events import EventLog, Status
    from wanlora.engine.train.loop import Trainer

    jd = make_job_dir(tmp / master, clips, tiny_model, steps=STEPS, multistage__low_noise=False,
                      training__learning_rate=LR, training__weight_decay=WD, training__max_grad_norm=1.0,
                      advanced__lora_master_dtype=master, advanced__compile=False)
    tr = Trainer(load_job(jd / "job.toml"), jd, EventLog(jd), Status(jd), device=torch.device(device))
    tr.dtype = torch.bfloat16
    tr.setup()
    return tr


def _reference_adamw(w0: list[torch.Tensor], grads: list[list[torch.Tensor]], max_norm: float) -> list[torch.Tensor]:
    """AdamW (decoupled decay, bias-corrected moments) after clipping to ``max_norm``, in float64: what the
    optimizer computes, without its rounding."""
    w = [x.double().clone() for x in w0]
    m = [torch.zeros_like(x) for x in w]
    v = [torch.zeros_like(x) for x in w]
    b1, b2 = BETAS
    for t, gs in enumerate(grads, start=1):
        gs = [g.double() for g in gs]
        norm = torch.sqrt(sum((g * g).sum() for g in gs))
        coef = min(1.0, max_norm / (float(norm) + 1e-6))
        for i, g in enumerate(gs):
            g = g * coef
            w[i] = w[i] * (1 - LR * WD)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            w[i] = w[i] - LR * m_hat / (v_hat.sqrt() + EPS)
    return w


def _grads(params: list[torch.Tensor], steps: int) -> list[list[torch.Tensor]]:
    """A steady direction plus noise per step, rounded to bf16 (what a bf16 backward hands the optimizer)."""
    g = torch.Generator().manual_seed(7)
    drift = [torch.randn(p.shape, generator=g) * 1e-3 for p in params]
    return [[(d + torch.randn(d.shape, generator=g) * 5e-4).bfloat16().float() for d in drift]
            for _ in range(steps)]


@pytest.mark.parametrize("device", DEVICES)
def test_fp32_masters_move_the_lora_as_exact_adamw_does(tmp_path: Path, clips: Path, tiny_model: Path,
                                                        device: str) -> None:
    tr = _trainer(tmp_path, clips, tiny_model, device, "fp32")
    ex = tr.experts["high_noise"]
    assert all(p.dtype == torch.float32 for p in ex.params)
    w0 = [p.detach().cpu().clone() for p in ex.params]
    grads = _grads(w0, STEPS)
    for gs in grads:  # the trainer's own update: clip, optimizer step (fused AdamW on CUDA), zero_grad
        for p, g in zip(ex.params, gs, strict=True):
            p.grad = g.to(p.device)
        tr._update(ex)
    ref = _reference_adamw(w0, grads, tr.job.training.max_grad_norm)
    moved = torch.cat([(p.detach().cpu().double() - a.double()).flatten() for p, a in zip(ex.params, w0, strict=True)])
    want = torch.cat([(r - a.double()).flatten() for r, a in zip(ref, w0, strict=True)])
    # fp32 rounding per step is ~1e-7 of the weight; 2 % leaves room for the kernels' order of operations
    assert float((moved - want).norm() / want.norm()) < 0.02
    state = ex.optimizer.state[ex.params[0]]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    tr.data.close()


def test_bf16_masters_lose_those_updates(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    """The comparison setting (``lora_master_dtype = "bf16"``, earlier builds): the same steps move the LoRA far
    less than exact AdamW — the loss the fp32 default removes, and proof that the check above can see it."""
    tr = _trainer(tmp_path, clips, tiny_model, "cpu", "bf16")
    ex = tr.experts["high_noise"]
    assert all(p.dtype == torch.bfloat16 for p in ex.params)
    w0 = [p.detach().float().clone() for p in ex.params]
    grads = _grads(w0, STEPS)
    for gs in grads:
        for p, g in zip(ex.params, gs, strict=True):
            p.grad = g.to(p.dtype)
        tr._update(ex)
    ref = _reference_adamw(w0, grads, tr.job.training.max_grad_norm)
    moved = torch.cat([(p.detach().double() - a.double()).flatten() for p, a in zip(ex.params, w0, strict=True)])
    want = torch.cat([(r - a.double()).flatten() for r, a in zip(ref, w0, strict=True)])
    assert float((moved - want).norm() / want.norm()) > 0.2
    tr.data.close()


def test_fp32_masters_compute_in_bf16_and_are_what_the_state_saves(tmp_path: Path, clips: Path,
                                                                    tiny_model: Path) -> None:
    """A real step under bf16 compute: the LoRA matmuls see bf16 inputs and give bf16 outputs (no fp32 copy of the
    activations), the gradients land fp32 in the masters, and the resumable state holds the fp32 masters."""
    from safetensors.torch import load_file
    from wanlora.engine.model.lora import lora_state_dict

    tr = _trainer(tmp_path, clips, tiny_model, "cpu", "fp32")
    ex = tr.experts["high_noise"]
    seen: set[tuple[torch.dtype, torch.dtype]] = set()
    hooks = [m.register_forward_hook(lambda _m, inp, out: seen.add((inp[0].dtype, out.dtype)))
             for n, m in ex.model.named_modules() if n.endswith((".lora_A.default", ".lora_B.default"))]
    assert hooks
    r = tr.train_step()
    for h in hooks:
        h.remove()
    assert seen == {(torch.bfloat16, torch.bfloat16)}
    assert torch.isfinite(torch.tensor(r.loss)) and all(p.dtype == torch.float32 for p in ex.params)
    path = tr.save_state()
    saved = load_file(str(path / "adapters.safetensors"))
    live = lora_state_dict(ex.model)
    assert {v.dtype for v in saved.values()} == {torch.float32}
    assert all(torch.equal(saved[f"high_noise/{k}"], v) for k, v in live.items())
    tr.data.close()
