"""The per-expert settings come from one table (engine.config.experts.EXPERT_SETTINGS).

What a user notices: every setting ``[multistage.<expert>]`` accepts is also what ``wanlora show`` lists,
what the run reports in its ``ready`` event and what each LoRA file's metadata records, with the job-wide key
it falls back to.  The list below is written out independently; a row added to (or renamed in) the table
without this list changing fails here, and so does any of those outputs missing a row.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from wanlora.engine.config import jobdir
from wanlora.engine.config.experts import EXPERT_SETTINGS
from wanlora.engine.config.findings import JobError
from wanlora.engine.config.io import job_from_dict
from wanlora.engine.config.schema import ExpertPlan, ExpertSettings, expert_plan
from wanlora.engine.model.lora_format import read_lora
from wanlora.engine.train.loop import run

from tests.engine.conftest import make_job_dir

pytestmark = pytest.mark.usefixtures("_home")  # a private WANLORA_HOME, offline (tests/engine/conftest.py)

# per-expert key -> the job-wide key it falls back to (written here by hand, not read from the table)
FALLS_BACK_TO = {"learning_rate": "training.learning_rate", "rank": "target.rank", "alpha": "target.alpha",
                 "timestep_type": "training.timestep_type", "timestep_bias": "training.timestep_bias",
                 "weight_decay": "training.weight_decay"}
# a value of its own for every key, each unlike the demo job's, and how `wanlora show` writes it (TOML)
OWN = {"learning_rate": 7e-4, "rank": 4, "alpha": 2.0, "timestep_type": "shift", "timestep_bias": "low_noise",
       "weight_decay": 0.02}
SHOWN = {"learning_rate": "0.0007", "rank": "4", "alpha": "2.0", "timestep_type": '"shift"',
         "timestep_bias": '"low_noise"', "weight_decay": "0.02"}
HEADER_FIELDS = {"rank", "alpha"}  # a LoRA file's own header fields; the rest sit in its `training` JSON


def test_the_table_is_the_schema_and_the_plan() -> None:
    assert {s.key: s.falls_back_to for s in EXPERT_SETTINGS} == FALLS_BACK_TO
    assert list(ExpertSettings.model_fields) == ["train", *FALLS_BACK_TO]
    assert [f.name for f in dataclasses.fields(ExpertPlan)] == ["expert", *FALLS_BACK_TO, "sources"]
    # each expert key takes the job-wide key's bounds: a value the job-wide key refuses is refused per expert too
    for key, bad in (("learning_rate", 0.5), ("rank", 0), ("alpha", 0.0), ("timestep_type", "cubic"),
                     ("timestep_bias", "middle"), ("weight_decay", 2.0)):
        with pytest.raises(JobError) as e:
            job_from_dict({"multistage": {"high_noise": {key: bad}}})
        assert e.value.findings[0].key == f"multistage.high_noise.{key}"
        section, field = FALLS_BACK_TO[key].split(".")
        with pytest.raises(JobError):
            job_from_dict({section: {field: bad}})
    job = job_from_dict({"multistage": {"high_noise": OWN}, "target": {"alpha": 8}})
    own, wide = expert_plan(job, "high_noise"), expert_plan(job, "low_noise")
    assert own.settings() == OWN and own.sources == {k: f"multistage.high_noise.{k}" for k in OWN}
    assert wide.sources == FALLS_BACK_TO and wide.alpha == 8.0


def test_every_row_reaches_the_run_the_files_and_show(tmp_path: Path, clips: Path, tiny_model: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from wanlora.tui.cli import main

    jd = make_job_dir(tmp_path, clips, tiny_model, steps=2, multistage__switch_every=1,
                      multistage__low_noise=dict(OWN))
    assert run(jd, device=torch.device("cpu")) == jobdir.EXIT_OK
    ready = next(e for e in jobdir.read_events(jd) if e["type"] == "state" and e["state"] == "ready")
    low, high = ready["expert_settings"]["low_noise"], ready["expert_settings"]["high_noise"]
    assert low == {**OWN, "sources": {k: f"multistage.low_noise.{k}" for k in OWN}}
    assert high["sources"] == FALLS_BACK_TO and set(high) == {*FALLS_BACK_TO, "sources"}

    _, meta = read_lora(jd / "checkpoints" / "wanlora_demo_low_noise.safetensors")
    training = json.loads(meta["training"])
    assert training["per_expert"] == sorted(OWN)
    assert {k: training[k] for k in OWN if k not in HEADER_FIELDS} == \
        {k: v for k, v in OWN.items() if k not in HEADER_FIELDS}
    assert (meta["rank"], meta["alpha"]) == (str(OWN["rank"]), repr(OWN["alpha"]))
    assert not HEADER_FIELDS & set(training)  # the header says rank/alpha; the JSON does not repeat them

    capsys.readouterr()
    assert main(["show", str(jd / jobdir.JOB_TOML)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("# low_noise expert"))
    for k in OWN:
        assert f"{k} {SHOWN[k]} (multistage.low_noise.{k}, user)" in line
    assert line.count("(multistage.low_noise.") == len(OWN)
