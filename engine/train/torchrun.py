"""``python -m wanlora.engine.train.torchrun [torchrun args] -m wanlora.engine.train JOB_DIR``: torchrun, keeping exit codes.

Plain torchrun exits 1 whenever a worker exits non-zero, so a paused group (every rank exits 75) would
look like a crash to the daemon.  This runs torchrun's own launcher unchanged and then exits with the
trainers' code: rank 0's when it is on this node, else the lowest local rank's; death by signal N →
128 + N, as a shell reports it.  A signal to the launcher itself (``kill -TERM -PGID``) is forwarded to
the workers by torchrun, which waits ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds for them to save.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


def exit_code_of(failures: Mapping[int, Any]) -> int:
    """The group's exit code from torchrun's ``{global rank: ProcessFailure}`` (a signal → 128 + N)."""
    if not failures:
        return 1
    code = int(failures[min(failures)].exitcode)
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except ChildFailedError as e:
        return exit_code_of(e.failures)
    except SignalException as e:
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
