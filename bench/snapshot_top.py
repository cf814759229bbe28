"""What filled the card: the live allocations of a CUDA memory snapshot, grouped by where they were made.

    python bench/snapshot_top.py snaps/81x1024x1024.pickle [--top 30] [--depth 3]

Reads a snapshot written by ``wanlora trial --memory-snapshot DIR`` (``torch.cuda.memory._dump_snapshot``;
plain pickle, no GPU needed) and prints the allocated blocks summed by their innermost ``--depth`` frames
outside torch's own Python files, biggest first, with their count and typical size.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections import defaultdict
from pathlib import Path

GIB = 2**30
_SKIP = ("torch/utils/_contextlib", "torch/nn/modules/module.py", "torch/_tensor.py", "<frozen", "contextlib.py",
         "torch/autograd/graph.py", "torch/_ops.py", "torch/utils/_device.py")


def where(frames: list[dict], depth: int) -> str:
    keep = [f for f in frames if not any(s in f.get("filename", "") for s in _SKIP)]
    parts = [f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in keep[:depth]]
    return " < ".join(parts) or "(no Python frames: C++ / autograd engine)"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshot", type=Path)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--depth", type=int, default=3)
    a = ap.parse_args(argv)
    snap = pickle.loads(a.snapshot.read_bytes())
    groups: dict[str, list[int]] = defaultdict(list)
    total = reserved = 0
    for seg in snap.get("segments", []):
        reserved += seg.get("total_size", 0)
        for b in seg.get("blocks", []):
            if b.get("state") == "active_allocated":
                total += b["size"]
                groups[where(b.get("frames", []), a.depth)].append(b["size"])
    print(f"{a.snapshot.name}: {total / GIB:.2f} GiB allocated in {sum(map(len, groups.values()))} blocks, "
          f"{reserved / GIB:.2f} GiB reserved")
    for key, sizes in sorted(groups.items(), key=lambda kv: -sum(kv[1]))[: a.top]:
        sizes.sort()
        print(f"{sum(sizes) / GIB:8.2f} GiB  {len(sizes):5d} × ~{sizes[len(sizes) // 2] / 2**20:9.1f} MiB  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
