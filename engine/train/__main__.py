"""``python -m wanlora.engine.train JOB_DIR``: run the trainer for one job folder; the exit code is the contract."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wanlora.engine.config.launch import use_trainer_env

use_trainer_env()  # expandable segments, NVLink multicast off: before torch touches CUDA


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wanlora.engine.train", description=__doc__)
    parser.add_argument("job_dir", type=Path, help="job folder holding job.toml")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    args = parser.parse_args(argv)
    from wanlora.engine.train.loop import run

    device = None
    if args.cpu:
        import torch

        device = torch.device("cpu")
    return run(args.job_dir, device=device)


if __name__ == "__main__":
    sys.exit(main())
