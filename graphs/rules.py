"""The table of coupling rules: op -> rule. One entry per fx target (module type, function, method).

A rule is a plain function ``rule(ctx, node) -> Flow | tuple | None`` that reads the flows of the
node's inputs from ``ctx`` and returns the flow of its output, recording unions, blocks and layer
positions on ``ctx.sets`` on the way. Module rules are keyed by the exact module type (a subclass may
change ``forward``, so it is never matched by its base class); call_method rules by method name.

Example:
    >>> table = default_rules()
    >>> table.lookup("call_method", "relu") is not None
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import fx

from graphs.context import TraceContext

Rule = Callable[[TraceContext, fx.Node], Any]


class RuleTable:
    """Maps op keys to rules; ``register`` refuses a key that is already there."""

    def __init__(self) -> None:
        self._rules: dict[Any, Rule] = {}

    def register(self, keys: Any, rule: Rule) -> None:
        for key in keys if isinstance(keys, (list, tuple)) else (keys,):
            if key in self._rules:
                raise ValueError(f"a coupling rule for {key!r} is already registered")
            self._rules[key] = rule

    def lookup(self, op: str, key: Any) -> Rule | None:
        if op == "call_module":
            return self._rules.get(key)  # key is the module's exact type
        return self._rules.get(("method", key) if op == "call_method" else key)

    def __contains__(self, key: Any) -> bool:
        return key in self._rules


def method(*names: str) -> list[tuple[str, str]]:
    """Keys for tensor methods, e.g. ``method("relu", "relu_")``."""
    return [("method", n) for n in names]


def default_rules() -> RuleTable:
    """A fresh table holding every built-in rule (a new copy per call: callers may add their own)."""
    from graphs import rules_attention, rules_modules, rules_shape, rules_tensor

    table = RuleTable()
    rules_modules.register_all(table)
    rules_tensor.register_all(table)
    rules_shape.register_all(table)
    rules_attention.register_all(table)
    return table
