"""The trainer process's own environment (``launch.use_trainer_env``): set before torch starts, never over
what the user set.  torch.compile's caches live under WANLORA_HOME, so a bucket's compile warm-up is paid
once per machine (a rented container's /tmp is lost on restart; its volume is not)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_SHOW = ("from wanlora.engine.config.launch import use_trainer_env; import os, json; use_trainer_env(); "
         "print(json.dumps({k: os.environ.get(k) for k in ('TORCHINDUCTOR_CACHE_DIR', 'PYTORCH_CUDA_ALLOC_CONF', "
         "'NCCL_NVLS_ENABLE', 'FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED', "
         "'FLASH_ATTENTION_CUTE_DSL_CACHE_DIR')}))")
_OURS = ("TORCHINDUCTOR_CACHE_DIR", "PYTORCH_CUDA_ALLOC_CONF", "FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED",
         "FLASH_ATTENTION_CUTE_DSL_CACHE_DIR")


def _env_after(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in _OURS}
    r = subprocess.run([sys.executable, "-c", _SHOW], env={**base, **env}, capture_output=True, text=True,
                       timeout=60, check=True)
    return json.loads(r.stdout)


def test_compile_cache_goes_under_the_home_and_user_settings_win(tmp_path: Path) -> None:
    got = _env_after({"WANLORA_HOME": str(tmp_path / "h")})
    assert Path(got["TORCHINDUCTOR_CACHE_DIR"]) == tmp_path / "h" / "cache" / "compile"
    assert got["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True" and got["NCCL_NVLS_ENABLE"] == "0"
    # FA4's compiled kernels persist beside inductor's (FA4 keeps them only in memory unless asked)
    assert got["FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED"] == "1"
    assert Path(got["FLASH_ATTENTION_CUTE_DSL_CACHE_DIR"]) == tmp_path / "h" / "cache" / "compile" / "fa4"
    mine = _env_after({"WANLORA_HOME": str(tmp_path / "h"), "TORCHINDUCTOR_CACHE_DIR": "/fast/cache",
                       "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512", "FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED": "0"})
    assert mine["TORCHINDUCTOR_CACHE_DIR"] == "/fast/cache"
    assert mine["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"
    assert mine["FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED"] == "0"
