"""The package layout: imports flow downward, no cycles, no imports hidden inside functions
(except in the command line, which imports torch and the toolkit only to run a command, so
that ``surgery --help`` is fast; its deferred imports still count for the layering and cycle
checks)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "surgery"
# Layers from the bottom up: a module imports only from its own folder or from lower layers.
LAYERS = [("errors", "atomic", "layers", "macs", "progress"), ("plan",), ("rebuild",), ("io",), ("measure",),
          ("prune",), ("recover", "testing"), ("cli",), ("", "__main__")]
RANK = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The module an import names: ``surgery.plan.plan.Plan`` -> ``surgery.plan.plan``."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports(path: Path) -> tuple[set[str], list[str]]:
    """(surgery modules imported at module level, imports found inside functions or
    ``if TYPE_CHECKING`` blocks) of one file."""
    tree = ast.parse(path.read_text())
    found, hidden = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.If)):
            guarded = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            if guarded or not isinstance(node, ast.If):
                hidden += [f"{path.name}:{n.lineno}" for n in ast.walk(node)
                           if isinstance(n, (ast.Import, ast.ImportFrom))]
        if isinstance(node, ast.Import):
            found |= {_resolve(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {_resolve(f"{node.module}.{a.name}") for a in node.names}
    return {m for m in found if m.startswith("surgery")}, hidden


GRAPH = {name: imports(path)[0] for name, path in MODULES.items()}


def _layer(module: str) -> tuple[int, str]:
    part = module.split(".")[1] if "." in module else ""
    return RANK[part], part


DEFERRING = PACKAGE / "cli"  # may import inside functions (see the module docstring)


def test_no_import_inside_a_function_or_type_checking_block():
    hidden = [where for path in MODULES.values() for where in imports(path)[1]
              if DEFERRING not in path.parents]
    assert hidden == []


def test_imports_flow_downward():
    upward = [f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
              if _layer(t)[1] != _layer(m)[1] and _layer(t)[0] >= _layer(m)[0]]
    assert upward == []


def test_no_import_cycle_between_surgery_modules():
    state: dict[str, str] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_every_sub_package_is_packaged():
    text = (ROOT / "pyproject.toml").read_text()
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert all(f'"{p}"' in text for p in packages), packages
