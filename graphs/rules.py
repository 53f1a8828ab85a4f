"""The one default table of coupling rules: every op the tracer understands, and its rule.

``default_rules()`` returns a fresh copy (callers may add their own rules to it). The table is
rendered as the op -> rule table of docs/OVERVIEW.md (``rule_table_markdown``).

Example:
    >>> table = default_rules()
    >>> table.lookup("call_method", "relu") is not None
    True
"""

from __future__ import annotations

from graphs import (
    rules_einsum,
    rules_experts,
    rules_index,
    rules_layers,
    rules_matmul,
    rules_pixel_shuffle,
    rules_reshape,
    rules_scales,
    rules_shape,
    rules_tensor,
)
from graphs.kinds import KINDS
from graphs.table import RuleTable, method

__all__ = ["RuleTable", "default_rules", "method", "rule_table_markdown"]


def default_rules() -> RuleTable:
    """A fresh table holding every built-in rule (a new copy per call: callers may add their own)."""
    table = RuleTable()
    for kind in KINDS:
        if kind.leaf:
            table.register_kind(kind.name, kind.holds, kind.rule)
        else:
            table.register(list(kind.functions), kind.rule)
    rules_layers.register_all(table)
    rules_experts.register_all(table)
    rules_tensor.register_all(table)
    rules_shape.register_all(table)
    rules_index.register_all(table)
    rules_reshape.register_all(table)
    rules_matmul.register_all(table)
    rules_scales.register_all(table)
    rules_pixel_shuffle.register_all(table)
    rules_einsum.register_all(table)
    return table


def rule_table_markdown(table: RuleTable | None = None) -> str:
    """The op -> rule table as markdown, one row per rule with the ops it handles.

    Example:
        >>> print(rule_table_markdown().splitlines()[0])
        | rule | ops |
    """
    by_rule: dict[str, list[str]] = {}
    for op, rule in (table or default_rules()).entries():
        by_rule.setdefault(rule, []).append(op)
    lines = ["| rule | ops |", "|---|---|"]
    lines += [f"| `{rule}` | {', '.join(f'`{o}`' for o in ops)} |"
              for rule, ops in sorted(by_rule.items())]
    return "\n".join(lines)
