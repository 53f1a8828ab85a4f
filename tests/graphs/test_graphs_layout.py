"""graphs/ stands alone: no import of surgery, no import inside a function, no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "graphs"
MODULES = {"graphs." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts): p
           for p in sorted(PACKAGE.rglob("*.py")) if p.stem != "__init__"}


def imports(path: Path) -> tuple[set[str], list[str], set[str]]:
    """(graphs modules imported at module level, imports inside functions, other packages)."""
    tree = ast.parse(path.read_text())
    found, hidden, packages = set(), [], set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            hidden += [f"{path.name}:{n.lineno}" for n in ast.walk(node)
                       if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [f"{node.module}.{a.name}" for a in node.names] \
            if isinstance(node, ast.ImportFrom) and node.module else []
        for name in names:
            packages.add(name.split(".")[0])
            module = next((m for m in MODULES if name == m or name.startswith(m + ".")), None)
            found |= {module} if module else set()
        if isinstance(node, ast.ImportFrom) and node.module == "graphs":
            found |= {f"graphs.{a.name}" for a in node.names if f"graphs.{a.name}" in MODULES}
    return found, hidden, packages


def test_graphs_imports_nothing_from_surgery_and_nothing_inside_functions():
    for path in MODULES.values():
        _, hidden, packages = imports(path)
        assert hidden == [] and "surgery" not in packages, path.name


def test_graphs_modules_form_no_cycle():
    edges = {name: imports(path)[0] - {name} for name, path in MODULES.items()}
    done: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        assert name not in stack, " -> ".join(stack + (name,))
        if name not in done:
            for dep in edges[name]:
                visit(dep, stack + (name,))
            done.add(name)

    for name in edges:
        visit(name, ())
