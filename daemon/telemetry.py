"""Machine telemetry for ``status``: per-GPU utilisation/memory/temperature/power (NVML), CPU/RAM/disk (psutil).

NVML answers in milliseconds without a CUDA context, so the daemon can ask on every status request;
results are cached for a moment so that a dashboard polling many jobs costs the machine nothing.
Inside containers NVML reports host pids, so GPUs are reported per device, never per process.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from wanlora.engine.config.gpu import NvmlUnavailable, open_nvml

CACHE_S = 2.0
GIB = float(1 << 30)


class Telemetry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._nvml_tried = False
        self._cache: tuple[float, dict[str, Any]] | None = None
        psutil.cpu_percent(interval=None)  # prime: the first call always answers 0.0

    def _pynvml(self) -> Any:
        if not self._nvml_tried:
            self._nvml_tried = True
            try:
                self._nvml = open_nvml()
            except NvmlUnavailable:  # no library, no driver, no GPU: report no GPUs
                self._nvml = None
        return self._nvml

    def gpus(self) -> list[dict[str, Any]]:
        nv = self._pynvml()
        if nv is None:
            return []
        out: list[dict[str, Any]] = []
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception:
            return []
        for i in range(count):
            row: dict[str, Any] = {"index": i}
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
                name = nv.nvmlDeviceGetName(h)
                row["name"] = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                row["mem_used_mb"] = round(mem.used / 2**20)
                row["mem_total_mb"] = round(mem.total / 2**20)
                row["util"] = nv.nvmlDeviceGetUtilizationRates(h).gpu
                row["temp_c"] = nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
                row["power_w"] = round(nv.nvmlDeviceGetPowerUsage(h) / 1000.0, 1)
            except Exception as e:  # one missing sensor must not hide the rest
                row.setdefault("error", str(e))
            out.append(row)
        return out

    def host(self) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        try:
            load = list(psutil.getloadavg())
        except OSError:
            load = []
        return {"cpu_percent": psutil.cpu_percent(interval=None), "cpu_count": psutil.cpu_count(),
                "ram_used_gb": round((vm.total - vm.available) / GIB, 2), "ram_total_gb": round(vm.total / GIB, 2),
                "load": [round(x, 2) for x in load]}

    def snapshot(self) -> dict[str, Any]:
        """GPUs + host, cached for :data:`CACHE_S`."""
        with self._lock:
            now = time.monotonic()
            if self._cache and now - self._cache[0] < CACHE_S:
                return self._cache[1]
            snap = {"gpus": self.gpus(), "host": self.host(), "ts": time.time()}
            self._cache = (now, snap)
            return snap

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None


def disk(path: Path | str) -> dict[str, Any]:
    """Free/total space of the disk that holds ``path`` (its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        u = shutil.disk_usage(p)
    except OSError as e:
        return {"path": str(path), "error": e.strerror}
    return {"path": str(path), "free_gb": round(u.free / GIB, 2), "total_gb": round(u.total / GIB, 2)}
