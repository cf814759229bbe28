"""Activation memory of one full-width Wan 2.2 A14B expert step, counted on the CPU with fake tensors.

    python bench/fake_memory.py 81x1024x1024 frugal --layers 2     # then --layers 4: the per-block slope

Real weights of ``--layers`` full-width blocks (bf16, LoRA r16 on attn+ffn), the trainer's checkpoint
plan (``frugal``: every block checkpointed, no attention kept; ``sac``: every block keeping attention;
``none``), and fake activations (FakeTensorMode: shapes only, nothing computed), so an 86 016-token step
costs seconds.  Every storage an op creates is counted until it is freed; the peak and the biggest live
tensors at the peak are printed.  This is the *eager* graph, without kernel workspaces: ``torch.compile``
fuses most fp32 temporaries away, so the compiled step's working set is expected to be smaller.
"""

from __future__ import annotations

import argparse
import json
import sys
import weakref
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

GIB = 2**30
_VIEWS = (torch.ops.aten.t.default, torch.ops.aten.detach.default)


class StorageCount(TorchDispatchMode):
    """Bytes of every storage an op creates, until the storage is freed; the peak and what was live then."""

    def __init__(self) -> None:
        super().__init__()
        self.cur = self.peak = 0
        self.live: dict[int, tuple[int, str, tuple, str]] = {}
        self.at_peak: dict[int, tuple[int, str, tuple, str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        outs = () if func in _VIEWS else (out if isinstance(out, (tuple, list)) else (out,))
        for t in outs:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if id(st) not in self.live:
                    self.live[id(st)] = (st.nbytes(), str(func), tuple(t.shape), str(t.dtype))
                    self.cur += st.nbytes()
                    weakref.finalize(st, self._free, id(st))
        if self.cur > self.peak:
            self.peak, self.at_peak = self.cur, dict(self.live)
        return out

    def _free(self, key: int) -> None:
        self.cur -= self.live.pop(key, (0,))[0]


def main(argv: list[str]) -> int:
    from diffusers import WanTransformer3DModel
    from wanlora.engine.model.lora import add_lora
    from wanlora.engine.train import acceleration as acc

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", help="FxHxW, e.g. 81x1024x1024")
    ap.add_argument("plan", choices=["frugal", "sac", "none"])
    ap.add_argument("--layers", type=int, default=2)
    a = ap.parse_args(argv)
    f, h, w = (int(v) for v in a.shape.split("x"))
    cfg_path = ROOT / "engine" / "model" / "configs" / "wan22_i2v_a14b" / "transformer" / "config.json"
    cfg = {k: v for k, v in json.loads(cfg_path.read_text()).items() if not k.startswith("_")}
    cfg["num_layers"] = a.layers
    torch.set_default_dtype(torch.bfloat16)
    model = WanTransformer3DModel(**cfg)
    torch.set_default_dtype(torch.float32)
    model.requires_grad_(False)
    add_lora(model, 16, 16.0, "attn+ffn", dtype=torch.bfloat16)
    n = {"frugal": a.layers, "sac": a.layers, "none": 0}[a.plan]
    acc.set_checkpointing(model, n, save_attention=True, keep_attention=a.layers if a.plan == "sac" else 0)
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.randn(1, 36, (f - 1) // 4 + 1, h // 8, w // 8, dtype=torch.bfloat16)
        t = torch.tensor([500.0])
        text = torch.randn(1, 512, 4096, dtype=torch.bfloat16)
        count = StorageCount()
        with count:
            out = model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
            after_forward = count.cur
            out.float().pow(2).mean().backward()
    print(f"{a.shape} plan={a.plan} blocks={a.layers} tokens={acc.video_tokens(f, h, w)}: "
          f"kept after forward {after_forward / GIB:.2f} GiB, peak {count.peak / GIB:.2f} GiB")
    biggest: Counter = Counter()
    for nbytes, func, shape, dtype in count.at_peak.values():
        biggest[(func, shape, dtype)] += nbytes
    for (func, shape, dtype), nbytes in biggest.most_common(8):
        print(f"  {nbytes / GIB:7.2f} GiB  {func} {shape} {dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
