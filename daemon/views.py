"""What ``status`` shows for a job: the queue row plus what the trainer last wrote (status.json).

Shared by the daemon (answering over the socket) and ``wanlora status`` reading ``queue.db`` directly
when the daemon is down, so both show the same thing.
"""

from __future__ import annotations

from typing import Any

from wanlora.daemon.home import Home
from wanlora.daemon.hub_push import read_state
from wanlora.daemon.queue import RUNNING, JobRow
from wanlora.engine.config import jobdir

LIVE_KEYS = ("step", "total_steps", "loss", "expert", "eta_s", "last_checkpoint", "heartbeat_ts")


def job_view(home: Home, row: JobRow, *, detail: bool = False) -> dict[str, Any]:
    d = row.to_dict()
    job_dir = home.job_dir(row.id)
    d["job_dir"] = str(job_dir)
    push = read_state(home.root, row.id)  # [save] push_to_hub / `wanlora push`: daemon.hub_push
    if push is not None:
        d["push"] = push
    if row.state == RUNNING or detail:
        st = jobdir.read_status(job_dir)
        # a status.json older than this run is the previous trainer's (before a pause, an edit, a restart): its
        # total_steps, step and heartbeat say nothing about the trainer that is starting now
        current = st is not None and float(st.get("heartbeat_ts") or 0) >= float(row.started_ts or 0)
        if st:
            live = {k: st.get(k) for k in LIVE_KEYS if st.get(k) is not None}
            if row.state == RUNNING and current:
                d.update({k: v for k, v in live.items() if k != "step" or (v or 0) >= row.step})
                d["stale"] = jobdir.is_stale(st)
            if detail:
                d["trainer_status"] = st
    if detail:
        d["train_log"] = str(job_dir / jobdir.TRAIN_LOG)
        d["events"] = str(job_dir / jobdir.EVENTS)
    return d
