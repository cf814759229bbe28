"""A torchrun worker for the tests: trains JOB_DIR like ``python -m wanlora.engine.train`` would, then every rank
writes its own LoRA weights to OUT/rank<R>.safetensors so the test can compare the replicas."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from wanlora.engine.config import jobdir
from wanlora.engine.config.io import load_job
from wanlora.engine.model.lora import lora_state_dict
from wanlora.engine.train import distributed
from wanlora.engine.train.loop import Trainer


def main(job_dir: Path, out: Path) -> int:
    group = distributed.open_run(job_dir, torch.device("cpu"))
    assert group is not None
    try:
        tr = Trainer(load_job(job_dir / jobdir.JOB_TOML), job_dir, group.events, group.status,
                     stop=group.stop, dist=group.ctx)
        tr.setup()
        code = tr.train()
        weights = {f"{n}/{k}": v.detach().clone().contiguous() for n, e in tr.experts.items()
                   for k, v in lora_state_dict(e.model).items()}
        save_file(weights, str(out / f"rank{group.ctx.rank}.safetensors"))
        tr.data.close()
        return code
    finally:
        group.close()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
