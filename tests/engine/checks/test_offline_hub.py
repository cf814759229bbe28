"""HF_HUB_OFFLINE with a hub id that is not in the cache: refused by validate (and so at the daemon's intake),
with the download that fixes it, instead of a job that fails at its first step (issue #27 item 15).
Offline by construction: a private $HF_HOME, the cache read only."""

from __future__ import annotations

from pathlib import Path

import pytest
from wanlora.engine.checks.validate import check_file

from tests.engine.conftest import clean_job

REPO = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
ALL = ("transformer", "transformer_2", "vae", "text_encoder", "tokenizer")


def cache_snapshot(hf_home: Path, subfolders: tuple[str, ...], repo: str = REPO) -> Path:
    """The Hugging Face cache layout (``hub/models--org--name/{refs/main, snapshots/<commit>/...}``) holding
    model_index.json and one small file per subfolder."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (snap / "model_index.json").write_text('{"_class_name": "WanImageToVideoPipeline"}')
    for sub in subfolders:
        (snap / sub).mkdir(exist_ok=True)
        (snap / sub / "config.json").write_text("{}")
    return snap


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hf = tmp_path / "hf"
    hf.mkdir()
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hf


def _errors(path: Path) -> dict:
    _, findings = check_file(path, machine=False)
    return {f.key: f for f in findings if f.level == "error"}


def hub_job(folder: Path, extra: str = "") -> str:
    return clean_job(folder) + f'[model]\nname_or_path = "{REPO}"\n{extra}'


def test_a_hub_id_missing_from_the_cache_is_refused_offline_with_the_download(job_file, ten_clips, offline) -> None:
    f = _errors(job_file(hub_job(ten_clips)))["model.name_or_path"]
    assert "HF_HUB_OFFLINE is set" in f.message and "not in the Hugging Face cache" in f.message
    assert str(offline / "hub") in f.message
    assert f"hf download {REPO}" in f.fix and "--include 'transformer_2/*'" in f.fix and "unset HF_HUB_OFFLINE" in f.fix


def test_a_partly_cached_snapshot_names_what_is_missing(job_file, ten_clips, offline) -> None:
    cache_snapshot(offline, ("transformer", "vae", "text_encoder", "tokenizer"))
    f = _errors(job_file(hub_job(ten_clips)))["model.name_or_path"]
    assert "lacks transformer_2/" in f.message and "transformer/," not in f.message
    # a job that trains only the high-noise expert does not need it
    only_high = hub_job(ten_clips).replace("[model]", "[multistage]\nlow_noise = false\n[model]")
    assert _errors(job_file(only_high, "high.toml")) == {}


def test_a_cached_snapshot_or_network_access_passes(job_file, ten_clips, offline, monkeypatch) -> None:
    job = job_file(hub_job(ten_clips))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert _errors(job) == {}  # online: downloaded on first use, as before
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_snapshot(offline, ALL)
    assert _errors(job) == {}
