"""`wanlora doctor` and the daemon read GPUs through one NVML layer (engine.config.gpu); a fake pynvml shows
what each reports for a driver with two GPUs, for no driver, and that every NVML session is closed."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from wanlora.engine.config import gpu
from wanlora.tui.commands import doctor

GIB = 1 << 30


@pytest.fixture(autouse=True)
def _every_gpu_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # a test sets it where it is the point


class NVMLError_DriverNotLoaded(Exception):  # noqa: N801 - pynvml's own naming
    pass


def fake_pynvml(cards: list[tuple[str, int, int]] | None) -> Any:
    """``cards``: (name, total GiB, free GiB) per GPU; None: the driver is not loaded."""
    m: Any = types.ModuleType("pynvml")
    m.open = 0

    def init() -> None:
        if cards is None:
            raise NVMLError_DriverNotLoaded("Driver Not Loaded")
        m.open += 1

    def shutdown() -> None:
        m.open -= 1

    m.nvmlInit, m.nvmlShutdown = init, shutdown
    m.nvmlSystemGetDriverVersion = lambda: b"560.35.03"
    m.nvmlSystemGetCudaDriverVersion_v2 = lambda: 12060
    m.nvmlDeviceGetCount = lambda: len(cards or [])
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: cards[h][0].encode()
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=cards[h][1] * GIB, free=cards[h][2] * GIB)
    m.nvmlDeviceGetUUID = lambda h: f"GPU-{h}abc-{cards[h][0][-4:]}".encode()
    return m


def test_two_gpus_are_listed_alike_by_detect_gpus_and_doctor(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = fake_pynvml([("NVIDIA H100 80GB HBM3", 80, 79), ("NVIDIA GeForce RTX 3060", 12, 11)])
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    assert gpu.detect_gpus() == [gpu.GpuInfo(0, "NVIDIA H100 80GB HBM3", 80.0, 79.0),
                                 gpu.GpuInfo(1, "NVIDIA GeForce RTX 3060", 12.0, 11.0)]
    checks = doctor.gpu_checks()
    assert [(c["level"], c["message"]) for c in checks] == [
        ("ok", "NVIDIA driver 560.35.03, supports CUDA 12.6"),
        ("ok", "GPU 0: NVIDIA H100 80GB HBM3, 80 GiB (79 GiB free)"),
        ("warn", "GPU 1: NVIDIA GeForce RTX 3060, 12 GiB (11 GiB free)")]
    assert "12 GB tier" in checks[2]["fix"]
    assert nv.open == 0  # every session shut down


def test_no_driver_is_an_empty_list_and_a_doctor_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(None))
    assert gpu.detect_gpus() == []
    (check,) = doctor.gpu_checks()
    assert check["level"] == "warn" and "(NVMLError_DriverNotLoaded)" in check["message"]
    assert "nvidia-smi" in check["fix"]


def test_no_pynvml_fails_doctor_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert gpu.detect_gpus() == []
    (check,) = doctor.gpu_checks()
    assert (check["level"], check["fix"]) == ("fail", "pip install nvidia-ml-py")


def test_a_query_failing_mid_way_keeps_what_was_read(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = fake_pynvml([("A", 24, 20), ("B", 24, 20)])

    def broken(h: int) -> Any:
        if h == 1:
            raise RuntimeError("GPU is lost")
        return types.SimpleNamespace(total=24 * GIB, free=20 * GIB)

    nv.nvmlDeviceGetMemoryInfo = broken
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    assert [g.name for g in gpu.detect_gpus()] == ["A"]
    assert nv.open == 0


@pytest.mark.parametrize(("cvd", "seen"), [(None, [0, 1, 2]), ("2", [2]), ("2,0", [2, 0]), ("1,7,2", [1]), ("", []),
                                          ("GPU-2abc", [2]), ("GPU-9", [])])
def test_a_process_sees_the_gpus_cuda_visible_devices_leaves_it(monkeypatch: pytest.MonkeyPatch, cvd: str | None,
                                                                 seen: list[int]) -> None:
    """A trial or trainer on one card of a busy machine resolves ``vram_tier = "auto"`` for that card: NVML lists
    every GPU, CUDA only the visible ones (up to the first entry that names none)."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([("busy H200", 141, 20), ("H200", 141, 139),
                                                            ("idle H200", 141, 140)]))
    if cvd is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cvd)
    assert [g.index for g in gpu.detect_gpus()] == seen


def test_auto_resolves_for_the_visible_card_not_the_freest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([("busy H200", 141, 20), ("idle H200", 141, 140)]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpu.free_vram_for("auto", gpu.detect_gpus()) == 20.0  # 140 if it had looked at the other card
