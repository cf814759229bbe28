"""``wanlora doctor``: is this machine ready for a two-day run?  GPU/driver/CUDA, disk, RAM, systemd/linger,
package versions, and whether WANLORA_HOME survives a container restart.  Never imports torch.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from wanlora.tui.commands._daemon_common import add_home, home_of

HELP = "check the machine: GPU, driver, CUDA, disk, RAM, systemd/linger, package versions, home folder"
PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "bitsandbytes", "flash-attn-4", "safetensors", "decord",
            "textual", "pydantic", "watchdog", "psutil", "nvidia-ml-py")
CUDA_EXTRA = ("bitsandbytes", "flash-attn-4")  # the `cuda` extra (flash-attn-4 is a pinned pre-release)
MIN_FREE_GB = 50.0  # checkpoints + latent caches of a full run
GIB = float(1 << 30)


def add_arguments(parser: argparse.ArgumentParser, verb: str = "doctor") -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    add_home(parser)


Check = dict[str, Any]


def _check(level: str, topic: str, message: str, fix: str = "") -> Check:
    return {"level": level, "topic": topic, "message": message, "fix": fix}


def gpu_checks() -> list[Check]:
    from wanlora.engine.config.gpu import NvmlUnavailable, driver_versions, list_gpus, nvml

    out: list[Check] = []
    try:
        with nvml() as nv:
            try:
                drv, (major, minor) = driver_versions(nv)
                out.append(_check("ok", "driver", f"NVIDIA driver {drv}, supports CUDA {major}.{minor}"))
                for g in list_gpus(nv):
                    level = "ok" if g.total_gb >= 22 else "warn"
                    out.append(_check(level, "gpu", f"GPU {g.index}: {g.name}, {g.total_gb:.0f} GiB ({g.free_gb:.0f} GiB free)",
                                      "" if level == "ok" else "below 24 GB: the 12 GB tier (nf4 + layer offloading) applies"))
            except Exception as e:
                out.append(_check("warn", "gpu", f"NVML query failed: {e}"))
    except NvmlUnavailable as e:
        if e.missing:
            return [_check("fail", "gpu", "nvidia-ml-py is not installed", "pip install nvidia-ml-py")]
        return [_check("warn", "gpu", f"no NVIDIA driver/GPU visible ({e.cause}); training would run on the CPU",
                       "on a GPU machine: check `nvidia-smi` and that the container was started with GPUs")]
    return out


def torch_check(has_gpu: bool) -> Check:
    try:
        v = md.version("torch")
    except md.PackageNotFoundError:
        return _check("fail", "torch", "torch is not installed", "pip install torch (a CUDA build on GPU machines)")
    if has_gpu and "+cpu" in v:
        return _check("fail", "torch", f"torch {v} is a CPU-only build on a GPU machine",
                      "install a CUDA build: pip install torch --index-url https://download.pytorch.org/whl/cu124")
    return _check("ok", "torch", f"torch {v}")


def package_checks() -> list[Check]:
    found, missing = [], []
    for name in PACKAGES:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            missing.append(name)
    out = [_check("ok", "packages", ", ".join(found))]
    extra = [m for m in missing if m in CUDA_EXTRA]
    plain = [m for m in missing if m not in CUDA_EXTRA]
    if plain:
        out.append(_check("warn", "packages", "not installed: " + ", ".join(plain), "pip install " + " ".join(plain)))
    if extra:
        out.append(_check("warn", "packages", "not installed (GPU machines): " + ", ".join(extra),
                          "pip install -e '.[cuda]' in the wanlora checkout (nf4, 8-bit AdamW, FlashAttention-4)"))
    return out


def host_checks(home: Path) -> list[Check]:
    import psutil

    out: list[Check] = []
    ram = psutil.virtual_memory().total / GIB
    out.append(_check("ok" if ram >= 64 else "warn", "ram", f"{ram:.0f} GiB RAM",
                      "" if ram >= 64 else "layer_offloading (12 GB tier) needs ~64 GB of system RAM"))
    p = home
    while not p.exists() and p != p.parent:
        p = p.parent
    free = shutil.disk_usage(p).free / GIB
    out.append(_check("ok" if free >= MIN_FREE_GB else "warn", "disk", f"{free:.0f} GiB free at {p}",
                      "" if free >= MIN_FREE_GB else f"keep at least {MIN_FREE_GB:.0f} GiB free for checkpoints and caches"))
    return out


def home_checks(home: Path) -> list[Check]:
    from wanlora.daemon.home import filesystem_type, network_fs_warning

    out: list[Check] = []
    env = os.environ.get("WANLORA_HOME")
    fs = filesystem_type(home if home.exists() else home.parent)
    warn = network_fs_warning(home if home.exists() else home.parent)
    if warn:
        out.append(_check("warn", "home", warn))
    if not env and Path("/workspace").is_dir():
        out.append(_check("warn", "home", f"WANLORA_HOME is not set (using {home}), but /workspace exists: on RunPod/Vast "
                          "the container disk is lost on restart",
                          "export WANLORA_HOME=/workspace/wanlora (in ~/.bashrc and the provider's start hook)"))
    elif fs == "overlay" and not env:
        out.append(_check("warn", "home", f"{home} is on the container's overlay disk, which a restart may wipe",
                          "set WANLORA_HOME to a persistent volume"))
    else:
        out.append(_check("ok", "home", f"{home} ({fs or 'unknown fs'})"))
    return out


def service_checks(home: Path) -> list[Check]:
    from wanlora.daemon.home import Home, lock_holder_pid

    out: list[Check] = []
    pid = lock_holder_pid(Home.resolve(home))
    out.append(_check("ok" if pid else "warn", "daemon", f"daemon running (pid {pid})" if pid else "daemon not running",
                      "" if pid else "wanlora daemon start"))
    has_systemd = Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None
    if not has_systemd:
        out.append(_check("ok", "systemd", "no systemd (usual in containers): `wanlora daemon start` detaches with "
                          "setsid and survives logout; run it from the provider's start hook to survive restarts"))
        return out
    out.append(_check("ok", "systemd", "systemd present: `wanlora daemon install-service` writes a user unit"))
    user = os.environ.get("USER") or ""
    linger = None
    if shutil.which("loginctl") and user:
        try:
            r = subprocess.run(["loginctl", "show-user", user, "--property=Linger"], capture_output=True, text=True,
                               timeout=5)
            linger = r.stdout.strip().partition("=")[2] or None
        except (OSError, subprocess.TimeoutExpired):
            linger = None
    if linger == "yes":
        out.append(_check("ok", "linger", f"linger is on for {user}: user services survive logout"))
    else:
        out.append(_check("warn", "linger", f"linger is {linger or 'unknown'} for {user or 'this user'}: a systemd user "
                          "service stops when you log out", f"loginctl enable-linger {user or '$USER'}"))
    return out


def checks(home: Path) -> list[Check]:
    gpus = gpu_checks()
    has_gpu = any(c["topic"] == "gpu" and c["level"] == "ok" for c in gpus)
    return [*gpus, torch_check(has_gpu), *package_checks(), *host_checks(home), *home_checks(home),
            *service_checks(home)]


def run(args: argparse.Namespace) -> int:
    home = home_of(args).root
    result = checks(home)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for c in result:
            print(f"{c['level'].upper():<5} {c['topic']:<9} {c['message']}")
            if c["fix"]:
                print(f"{'':<15} fix: {c['fix']}")
    return 1 if any(c["level"] == "fail" for c in result) else 0
