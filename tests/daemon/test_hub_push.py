"""Push to the Hub when a job finishes (issue #27), against a local fake Hub (tests/daemon/fake_hub.py), never
the network: the pair + card arrive after a tiny job completes through the real daemon; a failing Hub is
retried, then marked failed with the reason and the fix, while the next queued job still runs (and
``wanlora push`` uploads it later); the token comes from HF_TOKEN; the job's folder is only read; an upload
cut by a daemon stop or crash is finished by the next daemon.  Backoffs come from the daemon's config.toml."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from wanlora.engine.config import jobdir

from tests.daemon.conftest import REPO, cli, job_text, wait_for
from tests.daemon.fake_hub import FakeHub, hub_env

# small backoff through the daemon's own config.toml keys, so a failing Hub fails in well under a second
PUSH_CFG = {"push_attempts": 3, "push_backoff_s": 0.05, "push_backoff_max_s": 0.2}
EXPERTS = ("high_noise", "low_noise")


def _tree(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder``: size, mtime and content hash (what "nothing changed" means)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _push(d, job_id: int) -> dict:  # noqa: ANN001
    return d.job(job_id).get("push") or {}


def _submit(d, text: str, name: str) -> int:  # noqa: ANN001
    return d.request("submit", text=text, filename=f"{name}.toml")["id"]


def test_the_pair_and_card_arrive_after_a_tiny_job_completes_and_the_job_folder_is_untouched(
        home: Path, daemons, assets) -> None:
    gate = home.parent / "push-gate"
    gate.touch()  # the uploader waits at its first line until the job folder is recorded (daemon.faults.gate)
    with FakeHub() as hub:
        env = {**hub_env(hub, home.parent), "WANLORA_FAULT_POINT": "push-start", "WANLORA_FAULT_GATE": str(gate)}
        d = daemons(PUSH_CFG, env=env)
        job_id = _submit(d, job_text(assets, "tiny", steps=2, every=2, save__push_to_hub="me/tiny-lora"), "tiny")
        job_dir = home / "jobs" / str(job_id)
        j = wait_for(lambda: (x := d.job(job_id)).get("push", {}).get("state") == "uploading" and x, timeout=180,
                     interval=0.1, what="the upload to start")
        assert j["state"] == "completed" and hub.requests == [], j
        before = _tree(job_dir)
        assert {f"checkpoints/tiny_{e}.safetensors" for e in EXPERTS} <= set(before)
        gate.unlink()
        p = wait_for(lambda: (x := _push(d, job_id))["state"] == "done" and x, timeout=60, what="the upload")

        assert _tree(job_dir) == before, "the upload changed the job folder"
        assert p["url"] == f"{hub.url}/me/tiny-lora" and p["attempt"] == 1
        repo = hub.repos["me/tiny-lora"]
        assert repo.private is True  # private by default
        assert set(repo.files) == {"tiny_high_noise.safetensors", "tiny_low_noise.safetensors", "README.md"}
        for e in EXPERTS:
            assert repo.files[f"tiny_{e}.safetensors"] == (job_dir / "checkpoints" / f"tiny_{e}.safetensors").read_bytes()
        card = repo.files["README.md"].decode()
        assert "instance_prompt: \"sks\"" in card and "`sks` — put it in your prompt" in card
        assert 'load_lora_weights("me/tiny-lora", weight_name="tiny_high_noise.safetensors"' in card
        assert 'weight_name="tiny_low_noise.safetensors", adapter_name="low", load_into_transformer_2=True' in card
        assert "LoraLoaderModelOnly" in card and "| steps | 2 |" in card
        assert str(assets["clips"]) not in card and str(assets["model"]) not in card  # no local paths
        # the token came from HF_TOKEN: HF_HOME holds no token file, and the Hub saw only authorised requests
        assert not (home.parent / "hf-home" / "token").exists()
        assert hub.requests and all(ok for _m, _p, ok in hub.requests)

        r = cli("status", str(job_id), home=home)
        assert r.returncode == 0 and f"hub        done: {hub.url}/me/tiny-lora (private, 3 files)" in r.stdout, r.stdout
        r = cli("status", str(job_id), "--json", home=home)
        assert json.loads(r.stdout)["job"]["push"]["state"] == "done"
        d.kill()
        r = cli("status", str(job_id), "--json", home=home)  # the daemon down: the same state, from the file
        assert json.loads(r.stdout)["job"]["push"]["url"] == p["url"]


def _completed_job(home: Path, name: str, repo: str) -> tuple[int, Path]:
    """A job a daemon already ran to completion (row in queue.db, job folder, final pair), with no daemon up."""
    from wanlora.daemon.home import Home
    from wanlora.daemon.queue import Queue

    h = Home.resolve(home)
    h.ensure()
    with Queue(h.db) as q:
        row = q.add(name=name, gpus_req="auto", total_steps=2)
        job_dir, out = _fake_job(h.job_dir(row.id), name=name, repo=repo, samples=False)
        q.update(row.id, state="completed", reason="completed", output_dir=str(out), step=2, ended_ts=time.time())
    return row.id, job_dir


def test_a_failing_hub_is_retried_then_failed_with_the_fix_while_the_next_job_runs(home: Path, daemons,
                                                                                   assets) -> None:
    first, _ = _completed_job(home, "first", "me/first")  # completed just before the daemon stopped: upload not queued
    with FakeHub() as hub:
        hub.fail_status = 503
        hub.hold()
        d = daemons(PUSH_CFG, env=hub_env(hub, home.parent))
        wait_for(hub.waiting.is_set, timeout=60, interval=0.1, what="the first job's upload to start")
        second = _submit(d, job_text(assets, "second", steps=2, every=2), "second")
        # the first upload hangs at the Hub, and the queue goes on: the next job trains and completes
        wait_for(lambda: d.job(second)["state"] == "completed", timeout=180, interval=0.2,
                 what="the next job to complete while the first one's upload hangs")
        assert _push(d, first)["state"] == "uploading"
        hub.release()
        p = wait_for(lambda: (x := _push(d, first))["state"] == "failed" and x, timeout=60, what="the upload to fail")
        assert p["attempt"] == 3 and hub.count("/api/repos/create") == 3  # push_attempts = 3, then it stops
        assert "gave up after 3 attempts" in p["reason"] and "503" in p["reason"]
        assert f"`wanlora push {first}` tries again" in p["fix"]
        assert "push" not in d.job(second)  # a job without push_to_hub never uploads
        r = cli("status", str(first), home=home)
        assert "hub        failed: me/first: gave up after 3 attempts" in r.stdout and f"wanlora push {first}" in r.stdout

        # once the Hub answers again, `wanlora push JOB` uploads it
        hub.fail_status = None
        r = cli("push", str(first), home=home)
        assert r.returncode == 0 and "upload to me/first (private) queued" in r.stdout, r.stderr
        wait_for(lambda: _push(d, first)["state"] == "done", timeout=60, what="the upload on `wanlora push`")
        assert "first_low_noise.safetensors" in hub.repos["me/first"].files
        # a job without push_to_hub needs --repo; a bad --repo is refused before asking the daemon
        r = cli("push", str(second), home=home)
        assert r.returncode == 1 and "--repo yourname/second" in r.stderr
        r = cli("push", str(first), "--repo", "no-owner", home=home)
        assert r.returncode == 2 and "owner/name" in r.stderr


def test_an_upload_cut_by_a_daemon_stop_or_crash_is_resumed_by_the_next_daemon(home: Path, daemons) -> None:
    stopped, _ = _completed_job(home, "stopped", "me/stopped")
    crashed, crashed_dir = _completed_job(home, "crashed", "me/crashed")
    with FakeHub() as hub:
        hub.hold()
        env = hub_env(hub, home.parent)
        d1 = daemons({**PUSH_CFG, "cpu_slots": 0}, env=env)
        wait_for(hub.waiting.is_set, timeout=60, interval=0.1, what="an upload to start")
        d1.request("shutdown")  # `wanlora daemon stop` while the upload hangs
        d1.proc.wait(timeout=30)
    states = {j: json.loads((home / "push" / f"{j}.json").read_text()) for j in (stopped, crashed)}
    assert [s["state"] for s in states.values()] == ["pending", "pending"]
    assert "interrupted" in states[stopped]["reason"] and states[stopped]["attempt"] == 0
    # a daemon killed mid-upload leaves "uploading" behind
    jobdir.write_json_atomic(home / "push" / f"{crashed}.json", {**states[crashed], "state": "uploading", "attempt": 1})
    with FakeHub() as hub:
        d2 = daemons({**PUSH_CFG, "cpu_slots": 0}, env=hub_env(hub, home.parent))
        for j, repo in ((stopped, "me/stopped"), (crashed, "me/crashed")):
            p = wait_for(lambda j=j: (x := _push(d2, j))["state"] == "done" and x, timeout=60, what=f"{repo}")
            assert p["attempt"] == 1 and p["url"] == f"{hub.url}/{repo}"
        assert "README.md" in hub.repos["me/crashed"].files
        assert "resuming the pending upload to me/crashed" in d2.log.read_text()


# ---- one attempt of the uploader itself (python -m wanlora.daemon.hub_push), no daemon, no trainer: fast
def _fake_job(job_dir: Path, *, name: str = "orbit", repo: str = "me/orbit", samples: bool = True) -> tuple[Path, Path]:
    """A finished job's folder as the trainer leaves it: job.toml, the final low-noise file, a step checkpoint,
    previews at two steps with their ``sample`` events (only the low-noise expert trains: one file)."""
    out = job_dir / jobdir.CHECKPOINTS
    out.mkdir(parents=True)
    (job_dir / jobdir.JOB_TOML).write_text(
        f'[job]\nname = "{name}"\ntrigger_word = "zx"\n[model]\nname_or_path = "/srv/private/wan22"\n'
        f'[multistage]\nhigh_noise = false\n[save]\npush_to_hub = "{repo}"\n'
        '[[datasets]]\nfolder = "/home/alice/secret_clips"\n'
        '[[sample.prompts]]\nprompt = "zx orbits the castle"\nctrl_img = "/home/alice/castle.png"\n')
    (out / f"{name}_low_noise.safetensors").write_bytes(os.urandom(2048))
    (out / f"{name}_low_noise_000100.safetensors").write_bytes(os.urandom(2048))  # a step checkpoint: not uploaded
    if samples:
        sd = job_dir / jobdir.SAMPLES
        sd.mkdir()
        events = []
        for step in (100, 200):
            for ext in ("mp4", "png"):
                (sd / f"{step:06d}_0.{ext}").write_bytes(os.urandom(64))
            events.append({"v": 1, "seq": step, "type": "sample", "step": step, "index": 0,
                           "path": str(sd / f"{step:06d}_0.mp4"), "png": str(sd / f"{step:06d}_0.png"),
                           "prompt": "zx orbits the castle"})
        (job_dir / jobdir.EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events))
    return job_dir, out


def _attempt(root: Path, job_dir: Path, out: Path, env: dict[str, str]) -> dict:
    result = root / "result.json"
    r = subprocess.run([sys.executable, "-m", "wanlora.daemon.hub_push", "--repo", "me/orbit", "--public",
                        "--job-dir", str(job_dir), "--output-dir", str(out), "--result", str(result)],
                       env={**os.environ, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(result.read_text())


def test_the_uploader_sends_the_trained_experts_file_and_the_newest_previews_without_local_paths(tmp_path) -> None:
    job_dir, out = _fake_job(tmp_path / "7")
    before = _tree(job_dir)
    with FakeHub() as hub:
        res = _attempt(tmp_path, job_dir, out, hub_env(hub, tmp_path))
        assert res["ok"], res
        repo = hub.repos["me/orbit"]
    assert repo.private is False  # --public
    assert set(repo.files) == {"orbit_low_noise.safetensors", "README.md", "samples/000200_0.mp4",
                               "samples/000200_0.png"}  # only the trained expert, the final file, the last previews
    card = repo.files["README.md"].decode()
    assert "![zx orbits the castle](samples/000200_0.png)" in card and "[video](samples/000200_0.mp4)" in card
    assert "high_noise" not in card.split("## Training settings")[0]  # one expert: no high-noise file to load
    assert "load_into_transformer_2=True" in card and "only the low-noise expert was trained" in card
    assert "/home/alice" not in card and "/srv/private" not in card and "secret_clips" in card  # paths cut
    assert "base_model:" not in card  # a local base model is not a Hub id
    assert _tree(job_dir) == before


def test_no_token_or_a_refused_token_fails_at_once_with_the_fix(tmp_path) -> None:
    job_dir, out = _fake_job(tmp_path / "7", samples=False)
    with FakeHub() as hub:
        env = hub_env(hub, tmp_path)
        del env["HF_TOKEN"]
        res = _attempt(tmp_path, job_dir, out, {**env, "HF_TOKEN": ""})
        assert res["ok"] is False and res["retry"] is False and "no Hugging Face token" in res["reason"]
        assert "hf auth login" in res["fix"] and hub.requests == []
        res = _attempt(tmp_path, job_dir, out, hub_env(hub, tmp_path, token="hf_wrong"))
        assert res["ok"] is False and res["retry"] is False and "refused the token (401)" in res["reason"]
        (out / "orbit_low_noise.safetensors").unlink()
        res = _attempt(tmp_path, job_dir, out, hub_env(hub, tmp_path))
        assert res["retry"] is False and "orbit_low_noise.safetensors is missing" in res["reason"]
