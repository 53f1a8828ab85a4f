"""The Makefile's install rules: torch and torchvision pinned as constraints.txt says and
installed first, every extra installed under ``-c constraints.txt``, and ``make demo`` installing
only what examples/demo.py imports (no dev extra)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(target: str) -> list[str]:
    """The commands ``make -n TARGET`` would run in a fresh clone (no .venv yet)."""
    done = subprocess.run(["make", "-n", "-B", target, "VENV=.venv-never-made"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if "pip install" in line]


@pytest.fixture(scope="module")
def extras() -> dict[str, list[str]]:
    """pyproject.toml's extras (``name = [...]`` lines of optional-dependencies)."""
    text = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]
    found = re.findall(r"^(\w+) = \[(.*?)\]", text.split("\n[", 1)[0], re.MULTILINE | re.DOTALL)
    return {name: re.findall(r'"([^"]+)"', body) for name, body in found}


def test_torch_pin_matches_constraints_and_goes_first():
    pins = sorted(line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#"))
    first = dry_run("demo")[0]
    assert sorted(re.findall(r"torch\S*==\S+", first)) == pins
    for line in dry_run("test")[1:]:
        assert "-c constraints.txt" in line


def test_demo_installs_only_what_the_demo_imports(extras):
    installs = " ".join(dry_run("demo"))
    assert "[export]" in installs and "[dev]" not in installs
    tree = ast.parse((ROOT / "examples" / "demo.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    dev_only = set(extras["dev"]) - set(extras["export"])
    assert not imported & {name.replace("-", "_") for name in dev_only}
