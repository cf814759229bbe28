"""Daemon load: startup time, spool pickup latency, intake throughput, ``wanlora status`` latency with
hundreds of queued jobs, and the idle daemon's CPU and RSS (SPEC §9).  CPU-only; no GPU needed.

    python bench/daemon_load.py                 # 500 jobs, 30 s idle sample
    python bench/daemon_load.py --jobs 200 --idle 10 --out bench/results/daemon.jsonl

Everything is real: a ``python -m wanlora.daemon run`` process on a private home, real job files (tiny model +
real clips, so intake runs the full validator), the real ``wanlora status`` command.  cpu_slots = 0 keeps
every job queued (this measures the daemon, not the trainer).  Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _summary(name: str, xs: list[float], unit: str = "ms", **extra: object) -> dict:
    scale = 1000.0 if unit == "ms" else 1.0
    return {"bench": name, "n": len(xs), "unit": unit, "median": round(statistics.median(xs) * scale, 2),
            "p95": round(_pct(xs, 0.95) * scale, 2), "max": round(max(xs) * scale, 2), **extra}


def _start_daemon(home: Path, log: Path) -> tuple[subprocess.Popen, float]:
    from wanlora.daemon import client

    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "wanlora.daemon", "run", "--home", str(home)], cwd=ROOT,
                         stdin=subprocess.DEVNULL, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                         start_new_session=True)
    while not client.running(home):
        if p.poll() is not None:
            raise SystemExit(f"daemon exited: {log.read_text()[-2000:]}")
        time.sleep(0.002)
    return p, time.perf_counter() - t0


def _stop(p: subprocess.Popen) -> None:
    p.terminate()
    p.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU sampling")
    ap.add_argument("--status-runs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None, help="append the JSON lines here")
    args = ap.parse_args()

    import psutil
    from wanlora.daemon import client
    from wanlora.daemon.spool import submit_file
    from wanlora.engine.config.io import dump_job, job_from_dict
    from wanlora.engine.data.synthetic import write_clips
    from wanlora.engine.model.tiny import build_tiny_model
    from wanlora.engine.train.demo import demo_job_dict

    tmp = Path(tempfile.mkdtemp(prefix="wlb", dir="/tmp"))
    home = tmp / "home"
    home.mkdir()
    (home / "config.toml").write_text("cpu_slots = 0\n")
    os.environ["WANLORA_HOME"] = str(home)
    clips = tmp / "clips"
    write_clips(clips, n=4, num_frames=24, size=(64, 64), captions=True, caption="a red square")
    model = build_tiny_model(tmp / "model")

    def job(i: int) -> str:
        d = demo_job_dict(clips, model, steps=100 + i, name=f"load_{i:04d}", num_frames=9, resolution=64)
        return dump_job(job_from_dict(d))

    machine = {"machine": f"{platform.node()} {platform.machine()} {psutil.cpu_count()} cpu "
                          f"{psutil.virtual_memory().total / 2**30:.0f} GiB", "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d")}
    results: list[dict] = []

    def emit(r: dict) -> None:
        r.update(machine)
        results.append(r)
        print(json.dumps(r), flush=True)

    try:
        # 1. startup on an empty home (to the first answered ping)
        starts = []
        for _ in range(5):
            p, dt = _start_daemon(home, tmp / "daemon.log")
            starts.append(dt)
            _stop(p)
        emit(_summary("daemon_start_empty", starts))

        p, _ = _start_daemon(home, tmp / "daemon.log")
        # 2. pickup latency of one Maildir submission (rename into spool/new → visible in `list`)
        lat = []
        for i in range(20):
            n_before = len(client.request(home, "list")["jobs"])
            t0 = time.perf_counter()
            submit_file(home, job(10_000 + i))
            while len(client.request(home, "list")["jobs"]) == n_before:
                time.sleep(0.002)
            lat.append(time.perf_counter() - t0)
        emit(_summary("spool_pickup_maildir", lat, note="inotify wake + claim + full validation + freeze"))
        # a plain file dropped into spool/ waits until it has settled (settle_s = 1.0 default)
        lat = []
        for i in range(3):
            n_before = len(client.request(home, "list")["jobs"])
            t0 = time.perf_counter()
            (home / "spool" / f"drop_{i}.toml").write_text(job(20_000 + i))
            while len(client.request(home, "list")["jobs"]) == n_before:
                time.sleep(0.01)
            lat.append(time.perf_counter() - t0)
        emit(_summary("spool_pickup_plain_drop", lat, note="includes the 1 s settle window"))

        # 3. intake throughput: the rest of the jobs dropped at once
        have = len(client.request(home, "list")["jobs"])
        todo = max(0, args.jobs - have)
        texts = [job(i) for i in range(todo)]
        t0 = time.perf_counter()
        for t in texts:
            submit_file(home, t)
        while len(client.request(home, "list")["jobs"]) < have + todo:
            time.sleep(0.05)
        dt = time.perf_counter() - t0
        emit({"bench": "intake_throughput", "jobs": todo, "seconds": round(dt, 2),
              "jobs_per_s": round(todo / dt, 1) if dt else None})
        total = len(client.request(home, "list")["jobs"])

        # 4. status latency with everything queued: the whole CLI process, and the socket round trip alone
        env = {**os.environ, "WANLORA_HOME": str(home)}
        runs = []
        for _ in range(args.status_runs):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "wanlora.tui.cli", "status"], capture_output=True, env=env,
                               cwd=ROOT)
            runs.append(time.perf_counter() - t0)
            assert r.returncode == 0 and r.stdout.count(b"\n") >= total
        emit(_summary("wanlora_status_cli", runs, jobs=total, target_ms=200))
        runs = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.request(home, "list")
            runs.append(time.perf_counter() - t0)
        emit(_summary("socket_list_roundtrip", runs, jobs=total))
        runs = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.request(home, "status", job="1")
            runs.append(time.perf_counter() - t0)
        emit(_summary("socket_status_one_job", runs, jobs=total))

        # 5. idle: CPU over a window with nothing to do, and RSS
        proc = psutil.Process(p.pid)
        time.sleep(2.0)
        c0, t0 = proc.cpu_times(), time.perf_counter()
        time.sleep(args.idle)
        c1, t1 = proc.cpu_times(), time.perf_counter()
        cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100
        mem = proc.memory_info()
        emit({"bench": "daemon_idle", "jobs": total, "window_s": args.idle, "cpu_percent": round(cpu, 3),
              "rss_mb": round(mem.rss / 2**20, 1), "target_cpu_percent": 1.0,
              "threads": proc.num_threads(), "torch_loaded": client.request(home, "ping")["torch_loaded"]})
        _stop(p)

        # 6. restart with everything queued (recover + first answer)
        p, dt = _start_daemon(home, tmp / "daemon.log")
        emit({"bench": "daemon_start_with_jobs", "jobs": total, "ms": round(dt * 1000, 1)})
        _stop(p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        with open(args.out, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
