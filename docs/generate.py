"""Rewrite the generated tables of docs/OVERVIEW.md from the registries.

Run ``python docs/generate.py`` after adding a coupling rule or a surgeon;
tests/test_docs.py fails while the committed tables differ from the registries.
"""

from __future__ import annotations

from pathlib import Path

from graphs.kinds import kind_table_markdown
from graphs.rules.defaults import rule_table_markdown
from surgery.rebuild.surgeons import surgeon_table_markdown

OVERVIEW = Path(__file__).resolve().parent / "OVERVIEW.md"
TABLES = {"rules": rule_table_markdown, "kinds": kind_table_markdown,
          "surgeons": surgeon_table_markdown}


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- name:start -->`` and ``<!-- name:end -->``
    replaced by ``body``.

    Example:
        >>> replace_section("a\\n<!-- t:start -->\\nold\\n<!-- t:end -->\\n", "t", "new")
        'a\\n<!-- t:start -->\\nnew\\n<!-- t:end -->\\n'
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main() -> None:
    text = OVERVIEW.read_text()
    for name, render in TABLES.items():
        text = replace_section(text, name, render())
    OVERVIEW.write_text(text)


if __name__ == "__main__":
    main()
