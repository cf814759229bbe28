"""bench/single_file_load.py's code path on the CPU (tiny sizes), and the random diffusers folder it writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from wanlora.engine.model import single_file as sf
from wanlora.engine.model import weight_files as wf

ROOT = Path(__file__).resolve().parents[3]


def test_a_random_sharded_diffusers_expert_is_what_from_pretrained_loads(tmp_path: Path) -> None:
    from wanlora.engine.model.folder import load_expert
    from wanlora.engine.model.tiny import TRANSFORMER_CONFIG

    cfg = {**TRANSFORMER_CONFIG, "attention_head_dim": 16, "ffn_dim": 64}
    root = tmp_path / "model"
    shutil.copytree(wf.bundled_config_dir(), root)
    (root / "transformer" / "config.json").write_text(json.dumps(cfg, default=list))
    index = sf.write_random_expert(root / "transformer" / "diffusion_pytorch_model.safetensors", cfg,
                                   layout="diffusers", precision="fp32", fast=True, max_shard_bytes=200_000)
    shards = wf.shard_files(index)
    assert index.name == "diffusion_pytorch_model.safetensors.index.json" and len(shards) > 1
    on_disk = {k: v for f in shards for k, v in load_file(str(f)).items()}
    got = load_expert(root, wf.HIGH, torch.float32).state_dict()
    assert got.keys() == on_disk.keys()
    assert all(torch.equal(got[k], on_disk[k]) for k in got)  # fp32 both ways: the same bytes
    assert wf.identify(index).layout == "diffusers"


def test_the_load_bench_runs_both_cases_tiny_and_cleans_up(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "single_file_load.py"), "--tiny", "--dir", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert [r["case"] for r in rows] == ["comfyui_fp8", "diffusers"]
    assert all(r["lora_grads_finite"] and r["load_s"] > 0 and r["peak_rss_gib"] >= r["peak_anon_gib"] > 0
               for r in rows)
    assert list(tmp_path.iterdir()) == []  # each case's files are gone after it (the disk holds one case at most)
