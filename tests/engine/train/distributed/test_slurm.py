"""``wanlora slurm``: the sbatch script, checked by bash and run by a real single-node Slurm (Debian's
slurm-wlm: slurmctld + slurmd started here with a private config, auth/none, on free ports).

Without the Slurm binaries the real-Slurm test cannot run (``apt-get install slurm-wlm``); the script's
structure and what it does around ``srun`` (job folder, rendezvous address) are checked either way, with
``srun``/``scontrol`` replaced by recorders.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from wanlora.engine.config import jobdir
from wanlora.engine.config.io import save_job
from wanlora.engine.train.demo import demo_job_dict

from tests.engine.train.distributed.conftest import ROOT, child_env

HAVE_SLURM = all(shutil.which(b) for b in ("sbatch", "slurmctld", "slurmd", "scontrol", "squeue"))


def _job_file(tmp: Path, clips: Path, model: Path, **kw: object) -> Path:
    from wanlora.engine.config.io import job_from_dict

    path = tmp / "orbit.toml"
    save_job(job_from_dict(demo_job_dict(clips, model, steps=4, save__every=1000, **kw)), path)
    return path


def _wanlora(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wanlora.tui.cli", *args], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=120)


def _sbatch_options(script: str) -> dict[str, str]:
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            k, _, v = line.removeprefix("#SBATCH ").removeprefix("--").partition("=")
            out[k] = v
    return out


def test_script_for_two_nodes_parses_and_rendezvous_on_the_first_node(tmp_path: Path, clips: Path,
                                                                      tiny_model: Path) -> None:
    job = _job_file(tmp_path, clips, tiny_model)
    r = _wanlora("slurm", str(job), "--nodes", "2", "--gpus-per-node", "4", "--time", "1-00:00:00",
                 "--job-dir", str(tmp_path / "jobs" / "orbit"), "--python", "/opt/py/bin/python", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    script = r.stdout
    path = tmp_path / "orbit.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0  # bash's own parser
    opts = _sbatch_options(script)
    assert (opts["nodes"], opts["ntasks-per-node"], opts["gpus-per-node"], opts["time"]) == ("2", "1", "4", "1-00:00:00")
    assert opts["signal"] == "TERM@300"  # a state is saved before the time limit
    for var in ("NCCL_NVLS_ENABLE=0", "TORCH_SYMM_MEM_DISABLE_MULTICAST=1", "NVSHMEM_DISABLE_NVLS=1"):
        assert f"\nexport {var}\n" in script  # NVLink multicast off for every rank
    assert "expert-parallel" in script  # 8 GPUs, both experts: half per expert

    # run it with srun/scontrol replaced by recorders: what would each node start?
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho gpu-a17; echo gpu-a18\n")
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-a[17-18]",
           "SLURM_JOB_ID": "4242", "SRUN_ARGS": str(tmp_path / "srun.args")}
    assert subprocess.run(["bash", str(path)], env=env, cwd=tmp_path).returncode == 0
    argv = (tmp_path / "srun.args").read_text().splitlines()
    i = argv.index("/opt/py/bin/python")
    assert argv[i + 1:i + 3] == ["-m", "wanlora.engine.train.torchrun"]
    assert argv[argv.index("--nnodes") + 1] == "2" and argv[argv.index("--nproc-per-node") + 1] == "4"
    assert argv[argv.index("--rdzv-endpoint") + 1] == "gpu-a17:29400"
    assert argv[argv.index("--rdzv-id") + 1] == "slurm-4242"
    job_dir = tmp_path / "jobs" / "orbit"
    assert argv[-3:] == ["-m", "wanlora.engine.train", str(job_dir)]
    written = tomllib.loads((job_dir / "job.toml").read_text())  # the resolved job, sized to the allocation
    assert written["job"]["nodes"] == 2 and written["job"]["gpus"] == "all"
    assert written["datasets"][0]["folder"] == str(clips)
    # a resubmission keeps the job folder's job.toml (and so resumes)
    (job_dir / "job.toml").write_text(job_dir.joinpath("job.toml").read_text() + "\n# kept\n")
    assert subprocess.run(["bash", str(path)], env=env, cwd=tmp_path).returncode == 0
    assert (job_dir / "job.toml").read_text().endswith("# kept\n")


def test_bad_requests_are_refused_with_the_fix(tmp_path: Path, clips: Path, tiny_model: Path) -> None:
    job = _job_file(tmp_path, clips, tiny_model, advanced__multi_gpu="expert")
    r = _wanlora("slurm", str(job), "--nodes", "1", "--gpus-per-node", "3", cwd=tmp_path)
    assert r.returncode == 1 and "even number of GPUs" in r.stderr and "advanced.multi_gpu" in r.stderr
    assert "Traceback" not in r.stderr
    r = _wanlora("slurm", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slurm_cluster(tmp_path: Path):
    """A one-node Slurm cluster of this machine; yields the environment that talks to it."""
    if not HAVE_SLURM:
        pytest.skip("Slurm is not installed (apt-get install slurm-wlm); the script was checked without it")
    root = tmp_path / "slurm"
    (root / "state").mkdir(parents=True)
    (root / "spool").mkdir()
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=wanloratest", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}", "AuthType=auth/none", "CredType=cred/none", "SlurmUser=root",
        "SlurmdUser=root", f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/ctld.pid", f"SlurmdPidFile={root}/d.pid", "ProctrackType=proctrack/pgid",
        "TaskPlugin=task/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none", "MpiDefault=none",
        "ReturnToService=2", "MinJobAge=600",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN",
        f"PartitionName=wanlora Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    env = child_env(SLURM_CONF=str(conf))
    procs = [subprocess.Popen([daemon, "-D", "-f", str(conf), *extra], env=env, stdout=log, stderr=subprocess.STDOUT)
             for daemon, extra, log in (("slurmctld", [], open(root / "ctld.log", "wb")),
                                        ("slurmd", ["-N", host], open(root / "d.log", "wb")))]
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            r = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            if r.stdout.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            pytest.fail("the test's Slurm did not come up:\n" + (root / "ctld.log").read_text()[-2000:]
                        + (root / "d.log").read_text()[-2000:])
        yield env
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_a_real_slurm_runs_the_script_expert_parallel(tmp_path: Path, clips: Path, tiny_model: Path,
                                                      slurm_cluster: dict[str, str]) -> None:
    env = slurm_cluster
    job = _job_file(tmp_path, clips, tiny_model)
    job_dir = tmp_path / "jobs" / "orbit"
    r = _wanlora("slurm", str(job), "--nodes", "1", "--cpu-procs", "2", "--job-dir", str(job_dir),
                 "--python", sys.executable, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "orbit.sbatch"
    script.write_text(r.stdout)
    run = lambda *a: subprocess.run(list(a), env=env, cwd=tmp_path, capture_output=True, text=True,  # noqa: E731
                                    timeout=60)
    test_only = run("sbatch", "--test-only", str(script))
    assert test_only.returncode == 0, test_only.stderr  # Slurm's own parser and scheduler accept it
    sub = run("sbatch", "--parsable", str(script))
    assert sub.returncode == 0, sub.stderr
    jid = sub.stdout.strip().split(";")[0]
    end = time.monotonic() + 300
    while time.monotonic() < end and run("squeue", "-h", "-j", jid).stdout.strip():
        time.sleep(1)
    out = next(tmp_path.glob(f"slurm-*-{jid}.out"), None)
    log = out.read_text()[-3000:] if out else "(no output file)"
    info = run("scontrol", "show", "job", jid).stdout
    assert "JobState=COMPLETED" in info and "ExitCode=0:0" in info, info + log
    assert jobdir.read_status(job_dir)["state"] == "completed", log
    modes = [e["mode"] for e in jobdir.read_events(job_dir) if e.get("state") == "parallel"]
    assert modes == ["expert"], log
    for e in ("high_noise", "low_noise"):
        assert (job_dir / "checkpoints" / f"wanlora_demo_{e}.safetensors").is_file()
    assert str(ROOT)  # the trainer ran from this checkout (PYTHONPATH of the submitting shell)
