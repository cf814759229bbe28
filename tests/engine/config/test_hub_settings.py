"""``[save] push_to_hub`` / ``push_private`` (issue #27): a bad repo id is refused naming the key and the fix,
our check never accepts what huggingface_hub itself refuses, and ``import-aitk`` maps ai-toolkit's
``save.push_to_hub`` + ``hf_repo_id`` + ``hf_private`` instead of listing them as not imported."""

from __future__ import annotations

from pathlib import Path

import pytest
from wanlora.engine.checks.validate import check_file
from wanlora.engine.config.aitk import convert, to_toml
from wanlora.engine.config.io import job_from_dict, parse_toml
from wanlora.engine.config.schema import hub_repo_problem


def _aitk(save: dict) -> dict:
    return {"config": {"name": "wan_i2v_orbit", "process": [{"model": {"arch": "wan22_14b_i2v"}, "save": save}]}}


def _errors(path: Path) -> list:
    _res, findings = check_file(path)
    return [f for f in findings if f.level == "error"]


@pytest.mark.parametrize(("value", "fix_has"), [
    ("orbit-lora", "yourname/orbit-lora"),                       # no owner
    ("me/orbit lora", "letters, digits"),                        # a space
    ("https://huggingface.co/me/orbit-lora", "'me/orbit-lora'"),  # the URL, not the id
    ("me/orbit--lora", "no '--'"),
    ("me/orbit.git", "'me/orbit'"),
    ("a/b/c", "owner"),
])
def test_a_malformed_repo_id_is_refused_by_validate_naming_the_key_and_the_fix(tmp_path: Path, value: str,
                                                                              fix_has: str) -> None:
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "orbit"\n[save]\npush_to_hub = "{value}"\n')
    errors = [f for f in _errors(job) if f.key == "save.push_to_hub"]
    assert len(errors) == 1, errors
    assert fix_has in f"{errors[0].message} {errors[0].fix}"
    assert errors[0].fix  # a fix, not just a complaint
    job.write_text('[job]\nname = "orbit"\n[save]\npush_to_hub = "me/orbit-lora"\npush_private = false\n')
    assert not [f for f in _errors(job) if f.key.startswith("save.")]


@pytest.mark.parametrize("value", ["me/orbit-lora", "Org_1/wan2.2-i2v.v1", "a/b", "me/" + "x" * 96, "me/" + "x" * 97,
                                   "me/-x", "me/x-", "me/.x", "me/x.", "me/x..y", "me/x--y", "me/x.git", "_me/x_",
                                   "me/ü", "me//x", "/x", "me/"])
def test_no_repo_id_we_accept_is_one_huggingface_hub_refuses(value: str) -> None:
    """Independent check: huggingface_hub's own validator (the Hub's naming rules on the client side)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
        hub_ok = True
    except HFValidationError:
        hub_ok = False
    if hub_repo_problem(value) is None:
        assert hub_ok, f"we accept {value!r}, huggingface_hub refuses it"


def test_import_aitk_maps_push_to_hub_repo_and_privacy() -> None:
    conv = convert(_aitk({"push_to_hub": True, "hf_repo_id": "me/orbit-lora", "hf_private": False}))
    job = job_from_dict(conv.job)
    assert (job.save.push_to_hub, job.save.push_private) == ("me/orbit-lora", False)
    assert not [k for k, _, _ in conv.dropped if k.startswith("save.")]
    # the written file carries it and still loads
    assert job_from_dict(parse_toml(to_toml(conv))).save.push_to_hub == "me/orbit-lora"


def test_import_aitk_keeps_the_repo_private_when_the_config_left_hf_private_out() -> None:
    conv = convert(_aitk({"push_to_hub": True, "hf_repo_id": "me/orbit-lora"}))
    job = job_from_dict(conv.job)
    assert job.save.push_private is True
    assert any("public" in n and "push_private = false" in n for n in conv.notes)


def test_import_aitk_push_off_or_unusable_is_said_not_silently_dropped() -> None:
    off = convert(_aitk({"push_to_hub": False, "hf_repo_id": "me/orbit-lora", "hf_private": True}))
    assert job_from_dict(off.job).save.push_to_hub == ""
    assert not [k for k, _, _ in off.dropped if k.startswith("save.")]
    assert any("me/orbit-lora" in n and "push_to_hub is false" in n for n in off.notes)

    no_repo = convert(_aitk({"push_to_hub": True}))
    assert job_from_dict(no_repo.job).save.push_to_hub == ""
    (key, _v, why), = [d for d in no_repo.dropped if d[0].startswith("save.")]
    assert key == "save.push_to_hub" and "hf_repo_id is not set" in why and 'push_to_hub = "owner/name"' in why

    bad = convert(_aitk({"push_to_hub": True, "hf_repo_id": "orbit-lora"}))
    assert job_from_dict(bad.job).save.push_to_hub == ""
    assert [d[0] for d in bad.dropped if d[0].startswith("save.")] == ["save.push_to_hub"]


def test_validate_warns_when_no_hub_token_is_found_for_a_pushing_job(tmp_path: Path, monkeypatch) -> None:
    """Before hours of training: the upload at the end looks the token up the same way (huggingface_hub)."""
    from huggingface_hub import constants
    from wanlora.engine.config.machine import Machine

    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "orbit"\n[save]\npush_to_hub = "me/orbit-lora"\n')
    cpu = Machine(cuda=False, bitsandbytes=False)  # hub_token None: huggingface_hub's own lookup

    def hub_warnings() -> list:
        return [f for f in check_file(job, machine=cpu)[1] if f.key == "save.push_to_hub"]

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    (w,) = hub_warnings()
    assert w.level == "warning" and "me/orbit-lora" in w.message and "hf auth login" in w.fix
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    assert hub_warnings() == []
    monkeypatch.delenv("HF_TOKEN")
    (tmp_path / "no-token-file").write_text("hf_from_login\n")  # what `hf auth login` writes
    assert hub_warnings() == []
    job.write_text('[job]\nname = "orbit"\n')  # no push: no token needed
    (tmp_path / "no-token-file").unlink()
    assert hub_warnings() == []
