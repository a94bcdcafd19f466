"""The documentation says what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neurelay import configdoc

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def test_configuration_reference_is_generated_from_the_model():
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == configdoc.render(), (
        "docs/configuration.md is stale: run python -m neurelay.configdoc > docs/configuration.md"
    )


def _headings(markdown: str) -> list[str]:
    """The headings of a Markdown text, outside fenced code blocks."""
    headings, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            headings.append(line.strip())
    return headings


@pytest.mark.parametrize(
    "document",
    [README, *sorted(DOCS.glob("*.md"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_heading_appears_twice_in_a_document(document: Path):
    headings = _headings(document.read_text(encoding="utf-8"))
    assert sorted({h for h in headings if headings.count(h) > 1}) == []


def _layout() -> dict[str, str]:
    """README's Layout block: each path of the first column → its description."""
    section = README.read_text(encoding="utf-8").split("\n## Layout\n", 1)[1]
    block = section.split("```\n", 2)[1]
    entries: dict[str, str] = {}
    path = ""
    for line in block.splitlines():
        if line.startswith(" "):
            entries[path] += " " + line.strip()
        else:
            path, _, text = line.partition(" ")
            entries[path] = text.strip()
    return entries


def test_readme_layout_names_only_paths_that_exist():
    missing = [path for path in _layout() if not (ROOT / path).exists()]
    assert missing == []


def test_readme_layout_names_every_module_of_every_package():
    layout = _layout()
    unnamed = []
    for init in sorted((ROOT / "neurelay").rglob("__init__.py")):
        package = init.parent
        entry = f"{package.relative_to(ROOT)}/"
        assert entry in layout, f"the Layout has no line for {entry}"
        for module in sorted(package.glob("*.py")):
            if module.stem != "__init__" and not re.search(
                rf"(?<!\w){re.escape(module.stem)}(?!\w)", layout[entry]
            ):
                unnamed.append(str(module.relative_to(ROOT)))
    assert unnamed == []
