"""The intake check of a caption job file (``wanlora caption --queue``): its ``[caption]`` table, then its folder.

The job file's contract is ``engine.config.caption_job`` (torch-free, the daemon imports it); this check lists
the folder through ``engine.data.scan``, so it sits above data/ with the training job's checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wanlora.engine.config.caption_job import TABLE, job_name, spec_from_dict
from wanlora.engine.config.findings import Finding, JobError
from wanlora.engine.config.io import parse_toml
from wanlora.engine.data.scan import ScanError, list_media


def check_text(text: str, source: str = "caption.toml") -> dict[str, Any]:
    """The intake checker's reply for a caption job file: ``{"findings", "job"?}`` like a training job's.

    The folder must exist and be listable; a folder with nothing to caption is a warning (the job then
    finishes at once).  ``job`` is what the daemon freezes as job.toml: the ``[caption]`` table, absolute
    folder, plus ``[job] name``.
    """
    try:
        spec = spec_from_dict(parse_toml(text, source), source)
    except JobError as e:
        return {"findings": [f.to_dict() for f in e.findings]}
    folder = Path(spec.folder).expanduser()
    if not folder.is_absolute():
        return {"findings": [Finding("error", "caption.folder", f"{spec.folder!r} is a relative path",
                                     "give the folder's absolute path (wanlora caption --queue does)").to_dict()]}
    try:
        media, _ = list_media(folder)
    except ScanError as e:
        return {"findings": [Finding("error", "caption.folder", str(e)).to_dict()]}
    findings: list[Finding] = []
    if not media:
        findings.append(Finding("warning", "caption.folder", f"{folder} holds no clips or images"))
    table = spec.model_dump()
    return {"findings": [f.to_dict() for f in findings],
            "job": {"job": {"name": job_name(folder), "gpus": "auto"}, TABLE: table}}
