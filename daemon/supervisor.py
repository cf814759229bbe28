"""The daemon's lifecycle and main loop: start (take the home, re-adopt live trainers, open the socket),
watch running trainers and record how they end, apply the scheduler's decisions, stop.

The rest lives beside it: the intake thread turns spooled files into queued jobs (:mod:`daemon.intake`),
which jobs start is a pure function of the queue (:mod:`daemon.scheduling`), and the socket's commands have
their handlers in :mod:`daemon.commands` (typed requests in :mod:`daemon.protocol`).  Every state change
happens under ``self.lock`` (the loop's ticks, intake's commits and the commands all take it), so the queue
never sees two writers.  The loop wakes on inotify events from the spool, on commands, and on a timer: the
spool rescan interval when idle (near 0 % CPU), the poll interval while jobs run.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from wanlora.daemon import adopt, diskspace, protocol, runner, scheduling, sweep
from wanlora.daemon.callback import Callbacks
from wanlora.daemon.commands import Commands
from wanlora.daemon.config import DaemonConfig
from wanlora.daemon.home import DaemonLock, Home, network_fs_warning
from wanlora.daemon.hub_push import Pusher
from wanlora.daemon.intake import Intake
from wanlora.daemon.queue import (
    COMPLETED,
    FAILED,
    PAUSED,
    QUEUED,
    REASON_WAITING,
    RUNNING,
    TERMINAL,
    JobRow,
    Queue,
)
from wanlora.daemon.server import Send, Server
from wanlora.daemon.telemetry import Telemetry
from wanlora.engine.config import jobdir

MIN_TICK_S = 0.05
REPEAT_LOG_S = 60.0  # the same error or disk-full warning is logged at most this often (not on every tick)

DISK_STALL_MIN_S = 30.0  # a heartbeat this old (and ≥ 3 intervals) on a full disk: the trainer is stuck
DISK_STALL_GRACE_S = 30.0


@dataclass
class Watch:
    """A running trainer the loop keeps an eye on (``popen`` is None for one adopted after a restart)."""

    pid: int
    popen: subprocess.Popen[bytes] | None
    cursor: jobdir.EventCursor = field(default_factory=jobdir.EventCursor)
    kill_at: float | None = None  # monotonic time to SIGKILL after a cancel's SIGTERM
    disk_stall: bool = False  # stopped by the daemon: alive but unable to write on a full disk
    unrecorded: dict[str, Any] = field(default_factory=dict)  # progress a full disk kept out of queue.db


class Daemon:
    def __init__(self, home: Home, config: DaemonConfig | None = None, *, log: TextIO | None = None) -> None:
        self.home = home
        self.config = config if config is not None else DaemonConfig.load(home.config)
        self.out = log or sys.stderr
        self.unlogged: deque[str] = deque(maxlen=200)  # lines a full disk refused, written later
        self._said: dict[str, float] = {}  # repeated messages -> when last logged (see log_repeated)
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.watch: dict[int, Watch] = {}
        self.started_at = time.time()
        self._dlock = DaemonLock(home)
        self.queue: Queue | None = None
        self.server: Server | None = None
        self._observer: Any = None
        self.slots: list[str] = []
        self.gpu_names: dict[str, str] = {}
        self.commands = Commands(self)  # the socket's handlers (server threads call self.handle)

    # ------------------------------------------------------------------ lifecycle
    def log(self, msg: str) -> None:
        """One line in daemon.log; never raises: a full disk must not stop the daemon acting on what it logs."""
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        try:
            print(line, file=self.out, flush=True)
        except (OSError, ValueError):
            self.unlogged.append(line)  # kept (bounded) and written once there is room again
            return
        while self.unlogged:
            try:
                print(self.unlogged[0], file=self.out, flush=True)
            except (OSError, ValueError):
                return
            self.unlogged.popleft()

    def log_repeated(self, msg: str, key: str | None = None) -> None:
        """Log ``msg`` unless the same one was logged in the last REPEAT_LOG_S (a full disk fails every tick)."""
        key = key or msg
        now = time.monotonic()
        if now - self._said.get(key, -REPEAT_LOG_S) < REPEAT_LOG_S:
            return
        if len(self._said) > 1000:
            self._said.clear()
        self._said[key] = now
        self.log(msg)

    def start(self) -> None:
        """Take the home (or raise AlreadyRunning / HomeError), re-adopt live trainers, open the socket."""
        os.umask(0o077)  # queue.db, job folders, job files: owner-only, whatever umask started us
        self.home.ensure()
        self.home.check_socket_path()
        self._dlock.acquire()
        warn = network_fs_warning(self.home.root)
        if warn:
            self.log(f"warning: {warn}")
        self.reserve = diskspace.Reserve(self.home.root / ".disk-reserve")
        self.reserve.ensure()
        self.queue = Queue(self.home.db, on_full=self._disk_full)
        self.telemetry = Telemetry()
        self.callbacks = Callbacks(self.config.callback, self.config.callback_timeout_s, self.out)
        self.intake = Intake(self.home, self.config, self.queue, self.lock, log=self.log, on_queued=self._queued,
                             stderr=self.out)
        self.slots = self._detect_slots()
        self.pushes = Pusher(self.home.root, self.config, self.log)  # Hub uploads: its own thread (daemon.hub_push)
        self.pushes.start(self.q.all((COMPLETED,)))
        self._recover()
        self.intake.start()
        self.server = Server(self.home.sock, self.handle, self.log)
        self.server.start()
        self._start_watcher()
        self.log(f"daemon {os.getpid()} serving {self.home.root} (slots: {', '.join(self.slots) or 'none'})")

    def close(self) -> None:
        if self.server:
            self.server.close()
        if hasattr(self, "intake"):
            self.intake.stop()
        if hasattr(self, "pushes"):
            self.pushes.stop()
        if self._observer is not None:
            try:
                self._observer.stop()
            except Exception:
                pass
        if self.queue:
            self.queue.close()
        if hasattr(self, "telemetry"):
            self.telemetry.close()
        running = len(self.watch)
        self._dlock.release()
        note = f"; {running} running job(s) keep training and will be re-adopted by the next daemon" if running else ""
        self.log(f"daemon {os.getpid()} stopped{note}")

    def request_stop(self, *_: Any) -> None:
        self.stopping.set()
        self.wake.set()

    def serve_forever(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            while not self.stopping.is_set():
                t0 = time.monotonic()
                with self.lock:
                    self.tick()
                self.wake.wait(self._next_timeout())
                self.wake.clear()
                spent = time.monotonic() - t0
                if spent < MIN_TICK_S:  # a burst of inotify events must not spin the loop
                    time.sleep(MIN_TICK_S - spent)
        finally:
            self.close()

    def _next_timeout(self) -> float:
        t = self.config.rescan_interval_s
        if self.watch or self._unwatched:
            t = min(t, self.config.poll_interval_s)
        if self.callbacks.busy:
            t = min(t, 1.0)
        return t

    def tick(self) -> None:
        """One pass: watch running trainers, start what fits, reap callbacks.  Never raises.

        Intake runs in its own thread (daemon.intake): a slow or hostile job file never holds this loop.
        """
        for name, step in (("monitor", self._monitor), ("schedule", self._schedule),
                           ("callbacks", self.callbacks.reap), ("disk reserve", self._keep_room)):
            try:
                step()
            except Exception as e:  # keep serving; the log says what broke
                self.log_repeated(f"error in {name}: {type(e).__name__}: {e}")

    def _keep_room(self) -> None:
        """The reserve file and queue.db's own room (daemon.queue), re-made once the disk has space again."""
        self.reserve.ensure()
        self.q.keep_room()

    def _start_watcher(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return
        poke = self.intake.poke

        class Poke(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                poke()

        try:
            obs = Observer()
            obs.schedule(Poke(), str(self.home.spool), recursive=False)
            obs.schedule(Poke(), str(self.home.spool_new), recursive=False)
            obs.daemon = True
            obs.start()
            self._observer = obs
        except Exception as e:  # inotify limits reached etc.: the rescan still finds everything
            self.log(f"warning: no inotify watch on the spool ({e}); relying on the {self.config.rescan_interval_s:g} s rescan")

    def _detect_slots(self) -> list[str]:
        from wanlora.engine.config.gpu import detect_gpus

        gpus = detect_gpus()
        if gpus:
            self.gpu_names = {str(g.index): g.name for g in gpus}
            return [str(g.index) for g in gpus]
        return [f"cpu{i}" for i in range(self.config.cpu_slots)]

    @property
    def q(self) -> Queue:
        assert self.queue is not None
        return self.queue

    # ------------------------------------------------------------------ state changes
    def _set(self, row: JobRow, **values: Any) -> JobRow:
        new = self.q.update(row.id, **values)
        if new.state != row.state:
            self.log(f"job {new.id} {new.name}: {row.state} -> {new.state}" + (f" ({new.reason})" if new.reason else ""))
            self.callbacks.fire(new.to_dict())
        return new

    def _recover(self) -> None:
        """After a (re)start: re-adopt trainers that still hold their lock; requeue the ones that died."""
        for row in self.q.all((QUEUED, RUNNING, PAUSED)):
            job_dir = self.home.job_dir(row.id)
            pid = adopt.live_trainer(job_dir, row.pid)
            if pid:
                w = Watch(pid, None)
                self.watch[row.id] = w
                self._follow(row, w)
                reason = row.reason if row.cancel_requested or row.pause_requested else f"re-adopted by daemon {os.getpid()}"
                row = self._set(row, pid=pid, state=RUNNING, reason=reason)
                if row.cancel_requested:  # the previous daemon died mid-cancel: finish the job off
                    runner.signal_group(pid, signal.SIGTERM)
                    w.kill_at = time.monotonic() + self.config.cancel_grace_s
                self.log(f"re-adopted job {row.id} {row.name} (pid {pid}, step {row.step})")
                runner.append_log(job_dir, f"daemon {os.getpid()} re-adopted the running trainer (pid {pid})")
            elif row.state == RUNNING:
                row = self._follow(row, Watch(0, None))  # what it saved while no daemon watched
                self._finished(row, None, after_restart=True)
            else:
                self._sweep(row)
        for row in self.q.all(TERMINAL):  # a trainer killed mid-write before this daemon's time
            self._guard(f"sweeping job {row.id}", self._sweep, row)

    # ------------------------------------------------------------------ intake (daemon.intake does the work)
    def _queued(self, row: JobRow) -> None:
        """Called by the intake thread, under the lock, once a job is committed."""
        self.callbacks.fire(row.to_dict())
        self.wake.set()

    def _guard(self, what: str, fn: Any, *args: Any) -> Any:
        """Run one unit of work; a failure is logged and does not stop the others."""
        try:
            return fn(*args)
        except Exception as e:
            self.log_repeated(f"error in {what}: {type(e).__name__}: {e}")
            return None

    def _disk_full(self) -> bool:
        """The queue could not be written (disk full): give up the reserve so the state change gets recorded."""
        freed = self.reserve.release()
        msg = (f"warning: the disk holding {self.home.root} is full ({diskspace.describe_free(self.home.root)})"
               + ("; released the 4 MB reserve to record job states" if freed else ""))
        if freed:
            self.log(msg)
        else:
            self.log_repeated(msg, key="disk full")
        return freed

    def _sweep(self, row: JobRow) -> None:
        """Drop the temp files a killed trainer left (its pid is gone)."""
        removed = sweep.sweep_job(self.home.job_dir(row.id), row.output_dir or None)
        if removed:
            self.log(f"job {row.id}: removed {len(removed)} leftover temp file(s): "
                     + ", ".join(p.name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))

    # ------------------------------------------------------------------ watching trainers
    def _follow(self, row: JobRow, w: Watch) -> JobRow:
        """Read the trainer's new events: current step and the newest resumable state.

        Never raises for a failed write: progress that cannot be recorded (a full disk) stays on the watch
        and goes into the next write that succeeds, so watching the trainer goes on.
        """
        stored = row
        row = dataclasses.replace(row, **w.unrecorded) if w.unrecorded else row
        step, saved, total = row.step, row.saved_step, row.total_steps
        for ev in jobdir.read_events(self.home.job_dir(row.id), w.cursor):
            typ, s = ev.get("type"), ev.get("step")
            if not isinstance(s, int):
                continue
            if typ == "step":
                step = s
                total = ev.get("total_steps", total) or total
            elif typ == "state" and ev.get("state") in ("saved", "resumed"):
                saved = max(saved, s) if ev.get("state") == "saved" else saved
                if ev.get("state") == "resumed":
                    step = s
        if (step, saved, total) != (row.step, row.saved_step, row.total_steps) or w.unrecorded:
            change: dict[str, Any] = {"step": step, "saved_step": saved, "total_steps": total}
            if "resuming from step" in stored.reason and step > row.start_saved_step:
                change["reason"] = ""  # it has resumed: the note is history now (the log keeps it)
            try:
                row = self.q.update(row.id, **change)
                w.unrecorded = {}
            except Exception as e:
                w.unrecorded = change
                row = dataclasses.replace(row, **change)
                self.log_repeated(f"job {row.id}: progress not recorded ({e}); kept until a write succeeds",
                                  key=f"progress {row.id}")
        return row

    @property
    def _unwatched(self) -> bool:
        return bool(getattr(self, "_orphans", None))

    def _monitor(self) -> None:
        for job_id, w in list(self.watch.items()):
            self._guard(f"watching job {job_id}", self._check, job_id, w)
        # a RUNNING job nobody watches (its end could not be recorded, e.g. on a full disk): look again
        self._orphans = [r for r in self.q.all((RUNNING,)) if r.id not in self.watch]
        for row in self._orphans:
            self._guard(f"checking job {row.id}", self._check_orphan, row)

    def _check_orphan(self, row: JobRow) -> None:
        pid = adopt.live_trainer(self.home.job_dir(row.id), row.pid)
        if pid:
            self.watch[row.id] = Watch(pid, None)
            return
        row = self._follow(row, Watch(0, None))
        self._finished(row, None)

    def _check(self, job_id: int, w: Watch) -> None:
        """Follow one trainer's events; record its end when it is gone; escalate a cancel."""
        row = self.q.get(job_id)
        if row is None:
            del self.watch[job_id]
            return
        row = self._follow(row, w)  # never raises on a failed write: the stall check below must still run
        code: int | None = None
        if w.popen is not None:
            code = w.popen.poll()
            dead = code is not None
        else:
            dead = adopt.live_trainer(self.home.job_dir(job_id), w.pid) is None
        if dead:
            self._finished(row, code, disk_stall=w.disk_stall)  # raises on a failed write: retried next tick
            if self.watch.get(job_id) is w:
                del self.watch[job_id]
        elif w.kill_at is None and self._stalled_on_full_disk(row):
            grace = min(self.config.cancel_grace_s, DISK_STALL_GRACE_S)
            # act first: logging itself may fail on this full disk.  A stopped process keeps the SIGTERM pending;
            # the SIGKILL after the grace acts on it all the same.
            runner.signal_group(w.pid, signal.SIGTERM)
            w.kill_at = time.monotonic() + grace
            w.disk_stall = True
            self.log(f"job {job_id}: the trainer has not written status.json for a while and the disk is full; "
                     f"stopping it (SIGTERM, SIGKILL after {grace:g} s)")
        elif w.kill_at is not None and time.monotonic() > w.kill_at:
            runner.signal_group(w.pid, signal.SIGKILL)
            w.kill_at = None
            self.log(f"job {job_id}: still running {self.config.cancel_grace_s:g} s after SIGTERM; SIGKILL")

    def _stalled_on_full_disk(self, row: JobRow) -> bool:
        """A live trainer whose heartbeat stopped while its disk is full (it can neither save nor report)."""
        st = jobdir.read_status(self.home.job_dir(row.id)) or {}
        hb, interval = st.get("heartbeat_ts"), st.get("heartbeat_interval_s") or jobdir.HEARTBEAT_INTERVAL_S
        if not isinstance(hb, int | float) or not isinstance(interval, int | float):
            return False
        if time.time() - hb < max(3 * interval, DISK_STALL_MIN_S):
            return False
        return bool(self._full_paths(row))

    def _finished(self, row: JobRow, code: int | None, *, after_restart: bool = False,
                  disk_stall: bool = False) -> None:
        """A trainer ended: record completed/paused/failed/cancelled, or requeue it to resume."""
        job_dir = self.home.job_dir(row.id)
        status = jobdir.read_status(job_dir)
        out = runner.classify(code, status, cancel=bool(row.cancel_requested), pause=bool(row.pause_requested))
        self._sweep(row)
        full = self._full_paths(row) if disk_stall or (out.retry and out.reason in ("crash", "killed")) else []
        if full:  # retrying on a full disk fails the same way: say where, and how much is left
            where = "; ".join(f"{p} ({diskspace.describe_free(p)})" for p in full)
            how = ("could not write any more and was stopped by the daemon" if disk_stall
                   else f"stopped ({runner.describe_exit(code)})")
            out = runner.Outcome(FAILED, "disk full", f"no space left on {where}; the trainer {how}. Free space there (old checkpoints, caches), then "
                                 f"`wanlora retry {row.id}` resumes from the last saved state")
        end = {"pid": None, "gpus": "", "exit_code": code, "cancel_requested": 0, "pause_requested": 0,
               "step": row.step, "saved_step": row.saved_step, "total_steps": row.total_steps}  # progress not yet recorded
        if out.state == RUNNING:  # EXIT_LOCKED: another trainer already runs this folder; watch that one
            holder = adopt.live_trainer(job_dir)
            if holder:
                self.watch[row.id] = Watch(holder, None)
                self._set(row, pid=holder, reason="re-adopted")
                return
            out = runner.Outcome(FAILED, "crash", "the trainer found run.lock held, but no trainer holds it now",
                                 retry=True)
        if out.retry:
            detail = out.message
            if after_restart and out.reason != "stopped":
                detail = "the trainer was not running when the daemon restarted (reboot, crash or kill)"
            progressed = row.saved_step > row.start_saved_step
            streak = 1 if progressed else row.fail_streak + 1
            if streak > self.config.max_restarts:
                msg = (f"{detail}; gave up after {streak} failures in a row without a new checkpoint "
                       f"(max_restarts = {self.config.max_restarts}); `wanlora retry {row.id}` tries again")
                self._set(row, state=FAILED, reason=out.reason, message=msg, ended_ts=time.time(), fail_streak=streak,
                          **end)
                runner.append_log(job_dir, f"failed: {msg}")
                return
            msg = f"requeued after {out.reason} ({detail}); resumes from step {row.saved_step}"
            self._set(row, state=QUEUED, reason=REASON_WAITING, message=msg, restart_count=row.restart_count + 1,
                      fail_streak=streak, **end)
            runner.append_log(job_dir, msg)
            self.wake.set()
            return
        if out.state == COMPLETED:
            end["fail_streak"] = 0
        step = status.get("step") if status else None
        if isinstance(step, int) and step > row.step:
            end["step"] = step
        self._set(row, state=out.state, reason=out.reason, message=out.message,
                  ended_ts=time.time() if out.state in TERMINAL else None, **end)
        why = f": {out.reason}" if out.reason and out.reason != out.state else ""
        runner.append_log(job_dir, f"{out.state}{why}" + (f" — {out.message}" if out.message else ""))
        if out.state == COMPLETED:  # [save] push_to_hub: queued here, uploaded by the Pusher's thread
            self._guard(f"queueing job {row.id}'s Hub upload", self.pushes.job_completed, row)
        self.wake.set()

    def _full_paths(self, row: JobRow) -> list[Path]:
        """The job folder / output folder when the file system holding it is (nearly) full."""
        paths = [self.home.job_dir(row.id)]
        if row.output_dir:
            paths.append(Path(row.output_dir))
        out: list[Path] = []
        for p in paths:
            free = diskspace.free_bytes(p)
            if free is not None and free < diskspace.LOW_BYTES:
                out.append(p)
        return out

    # ------------------------------------------------------------------ scheduling
    def _busy_slots(self) -> set[str]:
        busy: set[str] = set()
        for job_id in self.watch:
            row = self.q.get(job_id)
            if row and row.gpus:
                busy.update(row.gpus.split(","))
        return busy

    def _schedule(self) -> None:
        """Apply :func:`daemon.scheduling.next_to_start` to the queue; a start that fails (no job.toml, no
        trainer) frees its slots again, so the pass is planned again without that job."""
        if self.stopping.is_set():
            return
        machine = scheduling.Machine(tuple(self.slots), bool(self.gpu_names))
        while True:
            busy = self._busy_slots()
            rows = {r.id: r for r in self.q.runnable()}
            for d in scheduling.next_to_start(list(rows.values()), [s for s in self.slots if s not in busy], machine):
                if isinstance(d, scheduling.Wait):
                    self.q.update(d.job_id, reason=d.reason)
                elif not self._start(rows[d.job_id], list(d.slots)):
                    break
            else:
                return

    def _start(self, row: JobRow, slots: list[str]) -> bool:
        job_dir = self.home.job_dir(row.id)
        if not (job_dir / jobdir.JOB_TOML).exists():
            self._set(row, state=FAILED, reason="config", message=f"{job_dir / jobdir.JOB_TOML} is missing",
                      ended_ts=time.time())
            return False
        try:
            popen = runner.spawn(job_dir, row.id, slots, row.restart_count)
        except OSError as e:
            self._set(row, state=FAILED, reason="crash", message=f"could not start the trainer: {e}",
                      ended_ts=time.time())
            return False
        w = Watch(popen.pid, popen)
        try:
            w.cursor.offset = (job_dir / jobdir.EVENTS).stat().st_size
        except FileNotFoundError:
            pass
        self.watch[row.id] = w
        reason = f"resuming from step {row.saved_step}" if row.saved_step else ""
        if row.restart_count and reason:
            reason = f"restart {row.restart_count}: {reason}"
        self._set(row, state=RUNNING, reason=reason, pid=popen.pid, gpus=",".join(slots), started_ts=time.time(),
                  ended_ts=None, exit_code=None, start_saved_step=row.saved_step, cancel_requested=0, pause_requested=0)
        return True

    # ------------------------------------------------------------------ commands (daemon.commands)
    def handle(self, msg: dict[str, Any], send: Send) -> dict[str, Any]:
        """Answer one socket request (called from connection threads); the handlers are in daemon.commands."""
        return self.commands.handle(msg, send)

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "home": str(self.home.root), "started": self.started_at,
                "uptime_s": round(time.time() - self.started_at, 1), "slots": self.slots, "gpus": self.gpu_names,
                "running": len(self.watch), "torch_loaded": "torch" in sys.modules,
                "counts": self.q.counts(), "protocol": protocol.VERSION}


def run_foreground(home: Home, config: DaemonConfig | None = None, log: TextIO | None = None) -> int:
    import faulthandler

    try:  # `kill -USR1 <daemon pid>` writes every thread's stack to daemon.log (a wedged daemon can be diagnosed)
        faulthandler.register(signal.SIGUSR1, file=log or sys.stderr, all_threads=True)
    except (AttributeError, ValueError, OSError):
        pass
    d = Daemon(home, config, log=log)
    d.start()
    d.serve_forever()
    return 0
