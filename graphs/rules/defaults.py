"""The one default table of coupling rules: every op the tracer understands, and its rule.

``default_rules()`` returns a fresh copy (callers may add their own rules to it). The table is
rendered as the op -> rule table of docs/OVERVIEW.md (``rule_table_markdown``).

Example:
    >>> table = default_rules()
    >>> table.lookup("call_method", "relu") is not None
    True
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from graphs.kinds import KINDS
from graphs.rules import (
    einsum,
    experts,
    index,
    layers,
    matmul,
    pixel_shuffle,
    reshape,
    scales,
    shape,
    tensor,
)
from graphs.rules.table import RuleTable, method

__all__ = ["RuleTable", "default_rules", "method", "rule_table_markdown"]

OPS = (  # op keys -> coupling rule, for every op besides the layer kinds' (graphs.kinds)
    (tensor.BINARY + tensor.BINARY_METHODS, tensor.elementwise),
    (tensor.UNARY + tensor.UNARY_METHODS, tensor.unary),
    (tensor.REDUCTIONS + tensor.REDUCTION_METHODS, tensor.reduction),
    (tensor.LIKE + method("new_zeros", "new_ones", "new_full", "new_empty"), tensor.like),
    ([torch.roll] + method("roll"), tensor.roll),
    ([F.normalize], tensor.normalize),
    ([torch.flatten] + method("flatten"), shape.flatten_function),
    ([torch.permute] + method("permute"), shape.permute),
    ([torch.transpose] + method("transpose"), shape.transpose),
    ([torch.cat, torch.concat], shape.cat),
    ([torch.stack], shape.stack),
    ([torch.split, torch.chunk, torch.tensor_split] + method("split", "chunk", "tensor_split"),
     shape.split),
    ([torch.unsqueeze] + method("unsqueeze"), shape.unsqueeze),
    ([torch.broadcast_to] + method("expand", "expand_as", "broadcast_to"), shape.expand),
    ([torch.unbind] + method("unbind"), shape.unbind),
    ([operator.getitem] + method("__getitem__"), index.getitem),
    ([torch.reshape] + method("view", "reshape"), reshape.reshape),
    ([torch.unflatten] + method("unflatten"), reshape.unflatten),
    (method("reshape_as", "view_as"), reshape.reshape_as),
    ([torch.matmul, torch.bmm] + method("matmul", "bmm", "__matmul__"), matmul.matmul),
    ([F.scaled_dot_product_attention], matmul.scaled_dot_product_attention),
    ([F.softmax, F.log_softmax, torch.softmax, torch.log_softmax]
     + method("softmax", "log_softmax"), matmul.softmax),
    ([torch.einsum], einsum.einsum),
    ([torch.pixel_shuffle], pixel_shuffle.pixel_shuffle),
    ([torch.pixel_unshuffle], pixel_shuffle.pixel_unshuffle),
    ([float], scales.size_to_float),
    ([operator.eq], scales.size_compared),
    ([torch.tensor, torch.as_tensor, torch.scalar_tensor] + method("new_tensor"),
     scales.size_to_tensor),
    ([torch.addmm], layers.addmm),
    (experts.GROUPED_MM, experts.grouped_mm),
    ([torch.index_add, torch.index_copy]
     + method("index_add", "index_add_", "index_copy", "index_copy_"), experts.index_add),
)


def default_rules() -> RuleTable:
    """A fresh table holding every built-in rule (a new copy per call: callers may add their
    own): the layer kinds' functions (or whole modules) from ``graphs.kinds.KINDS``, then
    ``OPS``."""
    table = RuleTable()
    for kind in KINDS:
        if kind.leaf:
            table.register_kind(kind.name, kind.holds, kind.rule)
        else:
            table.register(list(kind.functions), kind.rule)
    for keys, rule in OPS:
        table.register(keys, rule)
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
