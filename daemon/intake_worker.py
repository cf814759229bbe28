"""The checker the daemon's intake runs job files through, in its own process (``python -m wanlora.daemon.intake_worker``).

Validation reads user data (the dataset folder, captions, ctrl_img, a job file of any shape), so it may
be slow or, on a hostile folder, never end; in its own process the daemon can time it out and kill it
without ever blocking its main loop.  Protocol: one JSON request per line on stdin
(``{"text", "source", "output_roots"}``), one JSON reply per line on stdout (``{"findings", "job"?,
"job_toml"?}``); a first line ``{"ready": true}`` says the imports are done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def check(req: dict[str, Any]) -> dict[str, Any]:
    """Validate one job file's text; the reply carries the resolved job when it has no errors."""
    from wanlora.daemon import faults
    from wanlora.engine.checks import caption_job as caption_check
    from wanlora.engine.checks.validate import check_file
    from wanlora.engine.config.io import dump_job, job_to_dict

    faults.hang("checker-hang")
    from wanlora.engine.config import caption_job

    if caption_job.is_caption_text(str(req["text"])):  # `wanlora caption --queue`: not a training job
        return caption_check.check_text(str(req["text"]), str(req.get("source") or "caption.toml"))
    roots = [Path(r) for r in req.get("output_roots") or []]
    resolved, findings = check_file(str(req.get("source") or "job.toml"), text=str(req["text"]), output_roots=roots)
    out: dict[str, Any] = {"findings": [f.to_dict() for f in findings]}
    if resolved is not None:
        out["job"] = job_to_dict(resolved.job)
        out["job_toml"] = dump_job(resolved.job)
    return out


def main() -> int:
    import wanlora.engine.checks.caption_job  # noqa: F401  (imports before "ready": the timeout is for the check)
    import wanlora.engine.checks.validate  # noqa: F401

    out = sys.stdout
    sys.stdout = sys.stderr  # a stray print from a library must not corrupt the reply stream
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            reply = check(json.loads(line))
        except RecursionError:
            reply = {"error": "it is nested too deeply to be a job file"}
        except Exception as e:  # a validator bug must come back as a reason, not a dead worker
            reply = {"error": f"it could not be validated ({type(e).__name__}: {e}); run `wanlora validate` on it"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
