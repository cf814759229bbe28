"""What one full-width Wan 2.2 A14B block keeps and needs on the GPU, eager vs compiled (diagnostic, CUDA).

    python bench/block_memory.py --shapes 41x1024x1024,81x1024x1024 --layers 2,4 --out block_memory.jsonl

Builds ``--layers`` full-width blocks with random weights on the GPU and sets them up as the trainer does
(LoRA r16 on attn+ffn, fp8 frozen Linears, the attention kernel ``auto`` picks, every block checkpointed with
no attention kept: the plan an expert falls back to after an OOM), optionally ``torch.compile``d per block;
``--plain`` checkpoints without the explicit recompute-everything policy, as the trainer did before.
One forward + backward; per row: memory the forward leaves (what the checkpointed blocks keep) and the
backward's peak, both above what was allocated before the forward.  The per-block cost is the slope
between two ``--layers`` values.  ``bench/fake_memory.py`` counts the same eager graph on the CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

GIB = 2**30


def measure(shape: str, layers: int, compiled: bool, quant: str, plain: bool = False) -> dict:
    from wanlora.engine.model import attention
    from wanlora.engine.model.fullsize import TRANSFORMER_CONFIG, random_expert
    from wanlora.engine.model.lora import add_lora
    from wanlora.engine.model.quant import quantize_and_place
    from wanlora.engine.train import acceleration as acc

    dev = torch.device("cuda")
    f, h, w = (int(v) for v in shape.split("x"))
    model = random_expert(torch.bfloat16, dev, {**TRANSFORMER_CONFIG, "num_layers": layers})
    add_lora(model, 16, 16.0, "attn+ffn", dtype=torch.bfloat16)
    if quant != "none":
        quantize_and_place(model, quant, dev)
    kernel, _ = attention.choose("auto", dev)
    attention.apply(model, kernel)
    if plain:  # the checkpoint as before the fix: no selective policy (torch's own default context)
        import torch.utils.checkpoint as ckpt

        acc._CKPT_CLASSES.clear()
        acc._recompute_contexts = ckpt.noop_context_fn
    acc.set_checkpointing(model, layers, save_attention=True, keep_attention=0)
    if compiled:
        acc.compile_blocks(model)
    model.train()
    x = torch.randn(1, 36, (f - 1) // 4 + 1, h // 8, w // 8, dtype=torch.bfloat16, device=dev)
    t = torch.tensor([500.0], device=dev)
    text = torch.randn(1, 512, 4096, dtype=torch.bfloat16, device=dev)
    row = {"shape": shape, "tokens": acc.video_tokens(f, h, w), "layers": layers, "compiled": compiled,
           "quant": quant, "attention": kernel, "checkpoint": "plain" if plain else "policy"}
    for attempt in ("warm", "measured"):  # the first pass compiles; the second is measured
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        loss = out.float().pow(2).mean()
        torch.cuda.synchronize()
        kept = torch.cuda.memory_allocated() - base
        fwd_peak = torch.cuda.max_memory_allocated() - base
        torch.cuda.reset_peak_memory_stats()
        loss.backward()
        torch.cuda.synchronize()
        bwd_peak = torch.cuda.max_memory_allocated() - base
        del out, loss
        for p in model.parameters():
            p.grad = None
        row[attempt] = {"kept_gib": round(kept / GIB, 3), "forward_peak_gib": round(fwd_peak / GIB, 3),
                        "backward_peak_gib": round(bwd_peak / GIB, 3)}
    del model, x, text
    gc.collect()
    torch.cuda.empty_cache()
    torch._dynamo.reset()
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="41x1024x1024,81x1024x1024")
    ap.add_argument("--layers", default="2,4")
    ap.add_argument("--modes", default="eager,compiled")
    ap.add_argument("--quant", default="fp8", choices=["fp8", "none"])
    ap.add_argument("--plain", action="store_true", help="checkpoint without a selective policy (before the fix)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    for shape in a.shapes.split(","):
        for mode in a.modes.split(","):
            for layers in (int(v) for v in a.layers.split(",")):
                try:
                    row = measure(shape, layers, mode == "compiled", a.quant, a.plain)
                except torch.OutOfMemoryError as e:
                    row = {"shape": shape, "layers": layers, "compiled": mode == "compiled",
                           "oom": str(e).splitlines()[0][:200]}
                    gc.collect()
                    torch.cuda.empty_cache()
                line = json.dumps(row)
                print(line, flush=True)
                if a.out:
                    with open(a.out, "a") as fh:
                        fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
