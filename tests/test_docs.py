"""The tables in docs/OVERVIEW.md are generated from the registries: they must not drift."""

from __future__ import annotations

from pathlib import Path

from graphs.kinds import kind_table_markdown
from graphs.rules.defaults import rule_table_markdown
from surgery.rebuild.surgeons import surgeon_table_markdown

OVERVIEW = Path(__file__).resolve().parents[1] / "docs" / "OVERVIEW.md"


def marked_section(text: str, name: str) -> str:
    """The text between ``<!-- name:start -->`` and ``<!-- name:end -->``, stripped."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    assert start in text and end in text, f"docs/OVERVIEW.md has no {name} section"
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def test_surgeon_table_matches_the_registry():
    expected = surgeon_table_markdown()
    assert marked_section(OVERVIEW.read_text(), "surgeons") == expected, (
        "docs/OVERVIEW.md's surgeon table is stale: run python docs/generate.py")


def test_rule_table_matches_the_registry():
    assert marked_section(OVERVIEW.read_text(), "rules") == rule_table_markdown(), (
        "docs/OVERVIEW.md's op -> rule table is stale: run python docs/generate.py")


def test_kind_table_matches_the_registry():
    assert marked_section(OVERVIEW.read_text(), "kinds") == kind_table_markdown(), (
        "docs/OVERVIEW.md's layer-kind table is stale: run python docs/generate.py")
