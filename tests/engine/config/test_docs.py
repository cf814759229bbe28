"""docs/job-file.md is generated from the schema and presets; it must match them."""

from __future__ import annotations

from pathlib import Path

from wanlora.engine.config.docs import render
from wanlora.engine.config.schema import all_keys

DOC = Path(__file__).resolve().parents[3] / "docs" / "job-file.md"


def test_committed_reference_is_current():
    assert DOC.read_text(encoding="utf-8") == render(), "regenerate: python -m wanlora.engine.config.docs > docs/job-file.md"


def test_reference_lists_every_key():
    text = render()
    for key in all_keys():
        doc_key = key.replace("datasets.", "datasets[].").replace("sample.prompts.", "sample.prompts[].")
        assert f"`{doc_key}`" in text, key
