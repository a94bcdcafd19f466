"""The documentation says what the code does."""

from __future__ import annotations

from pathlib import Path

from neurelay import configdoc

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_configuration_reference_is_generated_from_the_model():
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == configdoc.render(), (
        "docs/configuration.md is stale: run python -m neurelay.configdoc > docs/configuration.md"
    )
