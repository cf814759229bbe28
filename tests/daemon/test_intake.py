"""Spool intake under abuse: every kind of bad file is rejected with a reason, half-written files wait,
good jobs beside them are queued intact, and the daemon stays up.  (cpu_slots = 0: nothing trains here.)"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from wanlora.daemon.spool import submit_file
from wanlora.engine.config.io import load_job

from tests.daemon.conftest import cli, job_text, wait_for


def _bad_files(assets: dict[str, Path], outside: Path) -> list[tuple[str, bytes | str, str]]:
    """(kind, content, a word the .error must contain).  Content "symlink:<target>", "dir", "fifo" are special."""
    good = job_text(assets, "x")
    return [
        ("unterminated_table", "[job\nname = 'x'\n", "not valid TOML"),
        ("double_equals", "[job]\nname = = 1\n", "not valid TOML"),
        ("open_string", '[job]\nname = "abc\n', "not valid TOML"),
        ("duplicate_key", "[job]\nname = 'a'\nname = 'b'\n", "not valid TOML"),
        ("bad_array_table", "[[datasets]\nfolder='x'\n", "not valid TOML"),
        ("steps_string", good.replace("steps = 20", 'steps = "many"'), "training.steps"),
        ("rank_negative", good.replace("rank = 8", "rank = -3"), "target.rank"),
        ("lr_string", good.replace("learning_rate = 0.001", 'learning_rate = "fast"'), "learning_rate"),
        ("gpus_words", good.replace('gpus = "auto"', 'gpus = "two"'), "job.gpus"),
        ("unknown_key", good.replace("[training]\n", "[training]\nstepz = 10\n"), "stepz"),
        ("unknown_section", good + "\n[bogus]\nx = 1\n", "bogus"),
        ("name_dotdot", good.replace('name = "x"', 'name = "../../etc/evil"'), "job.name"),
        ("name_dots", good.replace('name = "x"', 'name = ".."'), "job.name"),
        ("frames_10", good.replace("num_frames = 9", "num_frames = 10"), "num_frames"),
        ("no_expert", good.replace("high_noise = true", "high_noise = false").replace("low_noise = true", "low_noise = false"),
         "expert"),
        ("missing_folder", good.replace(str(assets["clips"]), "/nonexistent/clips"), "datasets[0].folder"),
        ("big_comment", "#" + "x" * 2_000_000 + "\n" + good, "KB"),
        ("huge_sparse", "sparse:60000000", "MB"),
        ("binary_nul", os.urandom(2048) + b"\x00", "NUL"),
        ("latin1", "[job]\nname = 'caf\xe9'\n".encode("latin-1"), "UTF-8"),
        ("nul_in_toml", good.encode().replace(b"[model]", b"[model]\x00"), "NUL"),
        ("empty", b"", "empty"),
        ("whitespace", b"   \n\n  ", "empty"),
        ("deep_nesting", "x = " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
        ("symlink_to_good", f"symlink:{outside}", "symbolic link"),
        ("symlink_passwd", "symlink:/etc/passwd", "symbolic link"),
        ("symlink_dangling", "symlink:/nonexistent/target.toml", "symbolic link"),
        ("a_directory", "dir", "directory"),
        ("a_fifo", "fifo", "regular file"),
        ("plain_text", "this is my README, not a job\n", "not valid TOML"),
        ("json_file", '{"job": {"name": "x"}}', "not valid TOML"),
        ("yaml_aitk", "job: extension\nconfig:\n  name: x\n", "not valid TOML"),
    ]


def _place(where: Path, fname: str, content: bytes | str, home: Path) -> None:
    """Put one bad entry into ``where``: new/ gets it by rename (Maildir), spool/ by a plain write."""
    target = where / fname
    if isinstance(content, str) and content.startswith("symlink:"):
        os.symlink(content.removeprefix("symlink:"), target)
        return
    if content == "dir":
        target.mkdir()
        (target / "inner.toml").write_text("[job]\n")
        return
    if content == "fifo":
        os.mkfifo(target)
        return
    tmp = home / "spool" / "tmp" / f"{fname}.part"
    if isinstance(content, str) and content.startswith("sparse:"):
        with open(tmp, "wb") as f:
            f.truncate(int(content.removeprefix("sparse:")))
    else:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    os.rename(tmp, target)


def test_every_kind_of_bad_spool_file_is_rejected_and_good_jobs_survive(home: Path, daemons, assets) -> None:
    (home / "spool" / "tmp").mkdir(parents=True)
    (home / "spool" / "new").mkdir()
    outside = home.parent / "outside_good.toml"
    outside.write_text(job_text(assets, "outside"))
    bad = _bad_files(assets, outside)
    expected: dict[str, str] = {}
    # three copies of every kind: two through new/ (Maildir), one dropped straight into spool/
    for copy in range(3):
        where = home / "spool" / ("new" if copy < 2 else "")
        for kind, content, word in bad:
            fname = f"{kind}_{copy}.toml"
            _place(where, fname, content, home)
            expected[fname] = word
    assert len(expected) >= 96
    # files the daemon must leave alone: hidden and in-progress names in spool/
    (home / "spool" / ".editor.swp.toml").write_text("[job\n")
    (home / "spool" / "upload.toml.part").write_text("[job\n")
    # good jobs beside them: Maildir submissions, plain drops, and an odd but legal file name
    good_names = ["good_a", "good_b", "good_c", "good_d", "good_e"]
    submit_file(home, job_text(assets, "good_a", steps=11))
    submit_file(home, job_text(assets, "good_b", steps=12), name="b.toml")
    (home / "spool" / "good c.toml").write_text(job_text(assets, "good_c", steps=13))
    (home / "spool" / "good_d.toml").write_text(job_text(assets, "good_d", steps=14))
    (home / "spool" / "ünï cødé\tname.toml").write_text(job_text(assets, "good_e", steps=15))

    d = daemons({"cpu_slots": 0})
    pid = d.pid

    def drained() -> bool:
        spool = home / "spool"
        left = [p.name for p in spool.iterdir() if p.name not in ("tmp", "new", "cur", "rejected")
                and not p.name.startswith(".") and not p.name.endswith(".part")]
        return not left and not os.listdir(spool / "new") and not os.listdir(spool / "cur")

    wait_for(drained, timeout=120, interval=0.2, what="the spool to drain")
    assert d.proc.poll() is None and d.request("ping")["pid"] == pid, "the daemon must survive every bad file"

    rejected = home / "spool" / "rejected"
    # the reason (after the "<name> was rejected at ..." line) must say what is wrong
    errors = {p.name.removesuffix(".error"): p.read_text().split("\n", 1)[1] for p in rejected.glob("*.error")}
    assert len(errors) == len(expected), sorted(set(expected) ^ set(errors))
    for fname, word in expected.items():
        assert fname in errors, f"{fname} was not rejected"
        assert word.lower() in errors[fname].lower(), f"{fname}: .error should mention {word!r}:\n{errors[fname]}"
        assert (rejected / fname).exists() or (rejected / fname).is_symlink(), f"{fname} not moved beside its .error"
    # a symlink is moved as a link: its target is untouched and still in place
    assert outside.read_text().startswith("[job]") and (rejected / "symlink_to_good_0.toml").is_symlink()
    # ignored files are still where they were
    assert (home / "spool" / ".editor.swp.toml").exists() and (home / "spool" / "upload.toml.part").exists()

    jobs = d.request("list")["jobs"]
    assert sorted(j["name"] for j in jobs) == good_names
    for j in jobs:
        assert j["state"] == "queued" and j["reason"].startswith("waiting for GPU"), j
        frozen = load_job(Path(j["job_dir"]) / "job.toml")  # the frozen copy is a complete, loadable job
        assert frozen.job.name == j["name"]
        assert frozen.training.steps == 11 + good_names.index(j["name"]) == j["total_steps"]
        assert frozen.datasets[0].folder == str(assets["clips"])
    assert [j["id"] for j in jobs] == sorted(j["id"] for j in jobs) and len({j["id"] for j in jobs}) == 5


def test_half_written_drop_is_picked_up_only_when_complete(home: Path, daemons, assets) -> None:
    d = daemons({"cpu_slots": 0, "settle_s": 1.0})
    text = job_text(assets, "slow_upload", steps=1234)
    lines = text.splitlines(keepends=True)
    target = home / "spool" / "slow.toml"
    done = threading.Event()

    def writer() -> None:  # an scp/rsync-like writer appending to the final name for ~3 s
        with open(target, "w") as f:
            for i, line in enumerate(lines):
                f.write(line)
                f.flush()
                if i % max(1, len(lines) // 12) == 0:
                    time.sleep(0.25)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    while not done.is_set():
        assert not d.request("list")["jobs"], f"a half-written file must not be queued\n{d.log.read_text()[-2000:]}"
        assert not list((home / "spool" / "rejected").glob("*")), \
            f"a half-written file must not be rejected\n{d.log.read_text()[-2000:]}"
        time.sleep(0.1)
    t.join()
    jobs = wait_for(lambda: d.request("list")["jobs"], timeout=30, what="the finished upload to be queued")
    assert len(jobs) == 1 and jobs[0]["name"] == "slow_upload" and jobs[0]["total_steps"] == 1234
    assert load_job(Path(jobs[0]["job_dir"]) / "job.toml").training.steps == 1234
    assert not target.exists() and not list((home / "spool" / "rejected").glob("*"))


def test_submit_prints_id_validates_first_and_spools_when_the_daemon_is_down(home: Path, daemons, assets,
                                                                            tmp_path: Path) -> None:
    job = tmp_path / "orbit.toml"
    job.write_text(job_text(assets, "orbit"))
    bad = tmp_path / "bad.toml"
    bad.write_text(job_text(assets, "bad").replace("num_frames = 9", "num_frames = 10"))

    # daemon down: the job is still spooled, and the user is told how to start the daemon
    r = cli("submit", str(job), home=home)
    assert r.returncode == 0, r.stderr
    assert "daemon not running" in r.stderr and "wanlora daemon start" in r.stderr
    assert len(list((home / "spool" / "new").glob("orbit-*.toml"))) == 1
    # an invalid job is refused before it reaches the spool, with the validate message
    r = cli("submit", str(bad), home=home)
    assert r.returncode == 1 and "num_frames" in r.stderr and "not submitted" in r.stderr
    assert len(list((home / "spool" / "new").iterdir())) == 1

    d = daemons({"cpu_slots": 0})
    wait_for(lambda: d.request("list")["jobs"], timeout=15, what="the spooled job to be queued")
    r = cli("submit", str(job), home=home)
    assert r.returncode == 0 and r.stdout.strip() == "Submitted job 2", (r.stdout, r.stderr)
    r = cli("submit", "--parsable", str(job), home=home)
    assert r.returncode == 0 and r.stdout.strip() == "3"
    assert [j["id"] for j in d.request("list")["jobs"]] == [1, 2, 3]
