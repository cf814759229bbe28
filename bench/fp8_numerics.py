"""fp8 compute vs bf16 on a full-size expert: LoRA gradients on the same batch, per block.

One random-weight Wan 2.2 A14B expert (built on the GPU), LoRA r16 with B drawn small (as after some
training: with B = 0 the A gradients vanish), one 41x512x512 batch, flow-matching loss; gradients of every
LoRA parameter with the bf16 base, then with the same base converted to fp8 compute
(engine.model.fp8_linear); the expert is built afresh from the same seed for each scaling asked for
(``tensor``: per-tensor scales, the trainer's; ``row``: per-token / per-channel).  Prints one JSON line per
block and scaling (cosine, relative norm error) and a summary line per scaling.

    python bench/fp8_numerics.py [--shape 41x512x512] [--scalings tensor,row] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from wanlora.engine.config.launch import use_trainer_env  # noqa: E402

use_trainer_env()


def main() -> int:
    import torch
    from wanlora.engine.model.fullsize import random_expert
    from wanlora.engine.model.lora import add_lora
    from wanlora.engine.train import acceleration as acc

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="41x512x512")
    ap.add_argument("--scalings", default="tensor")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    F, H, W = (int(v) for v in a.shape.split("x"))
    dev = torch.device("cuda")

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        m = random_expert(torch.bfloat16, dev)
        params = add_lora(m, 16, 16, dtype=torch.bfloat16)
        with torch.no_grad():
            for (n, _), p in zip(trainable(m), params, strict=True):
                if "lora_B" in n:
                    p.normal_(0, 0.01)
        acc.set_checkpointing(m, len(m.blocks))
        return m

    def trainable(m: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in m.named_parameters() if p.requires_grad]

    g = torch.Generator(dev).manual_seed(1)
    lf, lh, lw = (F - 1) // 4 + 1, H // 8, W // 8
    x0 = torch.randn(1, 16, lf, lh, lw, device=dev, generator=g)
    noise = torch.randn(1, 16, lf, lh, lw, device=dev, generator=g)
    cond = torch.randn(1, 20, lf, lh, lw, device=dev, generator=g)
    sigma = torch.tensor([0.6], device=dev)
    xt = (1 - sigma) * x0 + sigma * noise
    inp = torch.cat([xt, cond], 1).to(torch.bfloat16)
    txt = torch.randn(1, 512, 4096, device=dev, generator=g).to(torch.bfloat16)

    def grads(m: torch.nn.Module) -> dict[str, torch.Tensor]:
        for _, p in trainable(m):
            p.grad = None
        pred = m(inp, timestep=sigma * 1000, encoder_hidden_states=txt, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())
        loss.backward()
        return {n: p.grad.float().clone() for n, p in trainable(m)}

    out: list[dict] = []
    for scaling in a.scalings.split(","):
        m = build()  # one expert at a time (two bf16 copies and their activations do not fit 141 GB)
        names = [n for n, _ in trainable(m)]
        ref = grads(m)
        acc.apply_fp8(m, scaling=scaling)
        fp8 = grads(m)
        blocks = len(m.blocks)
        del m
        torch.cuda.empty_cache()
        rows = []
        for i in range(blocks):
            keys = [n for n in names if n.startswith(f"blocks.{i}.")]
            a16 = torch.cat([ref[k].flatten() for k in keys])
            a8 = torch.cat([fp8[k].flatten() for k in keys])
            cos = float(torch.nn.functional.cosine_similarity(a16, a8, dim=0))
            rel = float((a8 - a16).norm() / a16.norm().clamp(min=1e-30))
            rows.append({"scaling": scaling, "block": i, "cosine": round(cos, 5), "rel_norm_err": round(rel, 5)})
            print(json.dumps(rows[-1]), flush=True)
        summary = {"shape": a.shape, "scaling": scaling, "min_cosine": min(r["cosine"] for r in rows),
                   "max_rel_norm_err": max(r["rel_norm_err"] for r in rows),
                   "mean_cosine": round(sum(r["cosine"] for r in rows) / len(rows), 5),
                   "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
        print(json.dumps(summary), flush=True)
        out += [*rows, summary]
    if a.out:
        Path(a.out).write_text("\n".join(json.dumps(r) for r in out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
