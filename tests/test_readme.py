"""README.md runs as written: its ```bash and ```python blocks, top to bottom, in one fresh
empty folder, with the project's venv first on PATH (so ``surgery`` and ``python`` are ours).

The convention, one line right above a fence:
- ``<!-- readme: skip -->``: never run (it needs the repository or your own files; the text
  says so). Still checked: bash syntax (``bash -n``), python syntax (``compile``).
- ``<!-- readme: zoo -->``: slow (over ~20 s); run only by ``pytest -m zoo``.
- no line: run by ``pytest -m zoo`` with the zoo blocks, in README order.

The default suite checks the structure (markers, syntax, every ``--out`` used once) in a second
and runs the quick start (``QUICK``: the first unmarked block of "Python" and of "Command line",
about 45 s of CPU on 2 cores) in one folder. ``pytest -m zoo tests/test_readme.py`` runs every
block but the skipped ones, in README order. A failure names the block's first line in
README.md and shows its output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"^<!-- readme: (\w+) -->$")
MARKERS = ("skip", "zoo")
LANGS = ("bash", "python")
QUICK = ("Python", "Command line")  # the default suite runs the first unmarked block of each
TIMEOUT = 1800  # seconds per block


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts (1-based line of its first code line), its language,
    its marker (``None``, ``"skip"`` or ``"zoo"``), its section heading and its code."""

    line: int
    lang: str
    marker: str | None
    section: str
    code: str


def read_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` in order (all languages; a marker only for bash/python).

    Example:
        >>> [(b.lang, b.marker, b.section) for b in read_blocks(
        ...     "## Use\\n<!-- readme: zoo -->\\n```bash\\nls\\n```\\n")]
        [('bash', 'zoo', 'Use')]
    """
    lines, blocks, section, i = text.splitlines(), [], "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith("```"):
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"README.md:{i + 1}: fence never closed"
        above = MARKER.match(lines[i - 1].strip()) if i else None
        blocks.append(Block(i + 2, line[3:].strip(), above and above.group(1), section,
                            "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return blocks


def runnable(blocks: list[Block], markers: tuple[str | None, ...]) -> list[Block]:
    """The bash/python blocks whose marker is one of ``markers``, in order."""
    return [b for b in blocks if b.lang in LANGS and b.marker in markers]


def out_paths(block: Block) -> list[str]:
    """The ``--out`` arguments of a bash block's commands that do not pass ``--force``.

    Example:
        >>> out_paths(Block(1, "bash", None, "", "surgery prune lenet --out out/a  # x\\n"))
        ['out/a']
    """
    outs = []
    for line in block.code.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # not a command line (a here-document's text)
            continue
        if "--force" not in words:
            outs += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--out"]
    return outs


def run_block(block: Block, work: Path, scripts: Path) -> None:
    """Run one block in ``work`` (bash -e, or the venv python on a file of its own)."""
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # a user's shell has no repository on its import path
    script = scripts / f"readme_{block.line}.{'sh' if block.lang == 'bash' else 'py'}"
    script.write_text(block.code)
    command = ["bash", "-e", str(script)] if block.lang == "bash" else \
        [str(venv_bin / "python"), str(script)]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert done.returncode == 0, (
        f"README.md:{block.line} ({block.section}, {block.lang}) exited {done.returncode}:\n"
        f"{block.code}\n--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n"
        f"{done.stderr[-3000:]}")


def run_in_order(blocks: list[Block], tmp_path: Path) -> None:
    work, scripts = tmp_path / "work", tmp_path / "scripts"
    work.mkdir()
    scripts.mkdir()
    for block in blocks:
        run_block(block, work, scripts)


BLOCKS = read_blocks(README.read_text())


def test_markers_sit_right_above_a_bash_or_python_fence():
    lines = README.read_text().splitlines()
    for i, line in enumerate(lines):
        found = MARKER.match(line.strip()) or ("readme:" in line and "<!--" in line)
        if not found:
            continue
        assert MARKER.match(line.strip()) and MARKER.match(line.strip()).group(1) in MARKERS, (
            f"README.md:{i + 1}: write <!-- readme: skip --> or <!-- readme: zoo -->")
        fence = lines[i + 1] if i + 1 < len(lines) else ""
        assert fence[3:].strip() in LANGS and fence.startswith("```"), (
            f"README.md:{i + 1}: a readme marker goes right above a ```bash or ```python fence")


def test_every_block_is_valid_bash_or_python():
    for block in runnable(BLOCKS, (None, *MARKERS)):
        where = f"README.md:{block.line} ({block.section})"
        if block.lang == "python":
            compile(block.code, where, "exec")
        else:
            done = subprocess.run(["bash", "-n"], input=block.code, capture_output=True,
                                  text=True, check=False)
            assert done.returncode == 0, f"{where}: {done.stderr}"


def test_no_two_commands_write_the_same_out():
    """A later line reusing an earlier ``--out`` stops with 'not empty: pass --force'."""
    outs = Counter(p for b in runnable(BLOCKS, (None, "zoo")) if b.lang == "bash"
                   for p in out_paths(b))
    assert not [p for p, n in outs.items() if n > 1], (
        f"README.md: --out used more than once: {sorted(p for p, n in outs.items() if n > 1)}")


def test_quick_start_runs_in_a_fresh_folder(tmp_path):
    """The first unmarked block of each QUICK section, as written, in one empty folder."""
    unmarked = runnable(BLOCKS, (None,))
    quick = [next((b for b in unmarked if b.section == name), None) for name in QUICK]
    assert None not in quick, f"README.md: a section of {QUICK} has no unmarked block"
    run_in_order(quick, tmp_path)


@pytest.mark.zoo
def test_readme_runs_top_to_bottom_in_a_fresh_folder(tmp_path):
    """Every block but the skipped ones, in README order, in one empty folder."""
    run_in_order(runnable(BLOCKS, (None, "zoo")), tmp_path)
