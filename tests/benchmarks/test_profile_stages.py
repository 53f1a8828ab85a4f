"""benchmarks/profile_prune.py names the functions it times: each must exist where it says."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stages() -> list[tuple[str, str, str]]:
    tree = ast.parse((ROOT / "benchmarks" / "profile_prune.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign)
                and any(getattr(t, "id", "") == "STAGES" for t in n.targets))
    return ast.literal_eval(node.value)


def test_every_stage_names_a_function_that_exists():
    for label, path, func in _stages():
        tree = ast.parse((ROOT / path).read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert func in names, f"{label.strip()}: no function {func} in {path}"
