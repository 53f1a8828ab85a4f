"""The rule table type: op -> coupling rule, and module kind -> coupling rule for leaf layers.

A rule is a plain function ``rule(ctx, node) -> Flow | tuple | None`` that reads the flows of the
node's inputs from ``ctx`` and returns the flow of its output, recording unions, blocks and layer
positions on ``ctx.sets`` on the way. Function rules are keyed by the function object, tensor
method rules by ``("method", name)``. A few layers are captured whole (one ``call_module`` node)
because their rule needs the layer itself (packed multi-head attention): those rules are keyed
by a *kind*, a predicate on the module that says what it holds, never by its exact class.

Example:
    >>> table = RuleTable()
    >>> table.register(method("relu"), lambda ctx, node: None)
    >>> table.lookup("call_method", "relu") is not None, table.lookup("call_method", "tanh")
    (True, None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import fx, nn

Rule = Callable[[Any, fx.Node], Any]
Kind = Callable[[nn.Module], bool]


class RuleTable:
    """Maps op keys (and module kinds) to rules; ``register`` refuses a key already there."""

    def __init__(self) -> None:
        self._rules: dict[Any, Rule] = {}
        self._kinds: dict[str, tuple[Kind, Rule]] = {}

    def register(self, keys: Any, rule: Rule) -> None:
        for key in keys if isinstance(keys, (list, tuple)) else (keys,):
            if key in self._rules:
                raise ValueError(f"a coupling rule for {key!r} is already registered")
            self._rules[key] = rule

    def register_kind(self, name: str, kind: Kind, rule: Rule) -> None:
        """Capture modules for which ``kind(module)`` is true whole, and apply ``rule`` to them."""
        if name in self._kinds:
            raise ValueError(f"a module kind {name!r} is already registered")
        self._kinds[name] = (kind, rule)

    def kind_of(self, module: nn.Module) -> str | None:
        return next((n for n, (kind, _) in self._kinds.items() if kind(module)), None)

    def lookup(self, op: str, key: Any) -> Rule | None:
        """The rule of a node: ``key`` is its target (a module for ``call_module``)."""
        if op == "call_module":
            name = self.kind_of(key)
            return self._kinds[name][1] if name is not None else None
        try:
            return self._rules.get(("method", key) if op == "call_method" else key)
        except TypeError:  # an unhashable target
            return None

    def entries(self) -> list[tuple[str, str]]:
        """(op, rule name) of every entry, for the docs' table."""
        rows = [(_key_name(k), f"{r.__module__.rpartition('.')[2]}.{r.__name__}")
                for k, r in self._rules.items()]
        rows += [(f"module kind: {n}", f"{r.__module__.rpartition('.')[2]}.{r.__name__}")
                 for n, (_, r) in self._kinds.items()]
        return rows

    def __contains__(self, key: Any) -> bool:
        return key in self._rules


def _key_name(key: Any) -> str:
    if isinstance(key, tuple) and key[0] == "method":
        return f"Tensor.{key[1]}"
    module = getattr(key, "__module__", None) or "torch"
    name = getattr(key, "__name__", str(key))
    prefix = {"torch.nn.functional": "F", "torch._C._nn": "F", "_operator": "operator",
              "operator": "operator"}.get(module, module)
    prefix = "torch" if prefix.startswith("torch.") else prefix
    return f"{prefix}.{name}"


def method(*names: str) -> list[tuple[str, str]]:
    """Keys for tensor methods, e.g. ``method("relu", "relu_")``."""
    return [("method", n) for n in names]
