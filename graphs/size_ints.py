"""Sizes read from a tensor's shape during capture: ints that remember the graph node they came
from (``SizeInt``), and floats made from them, recorded as ``float`` nodes.

``C // 2`` with ``C = x.shape[1]`` is a SizeInt too (an ``operator.floordiv`` node), so a
reshape can tell a size read from a tensor from a literal one. A size that becomes a float
(``C ** -0.5``, ``C / 2``, ``C * 0.5``, ``float(C)``, ``math.sqrt(C)``) is a plain float, but
the graph records the conversion as a ``float`` node whose argument is the size's node and whose
``stack_trace`` is the user's line: a scale read from a shape, which the tracer checks
(``graphs.rules.scales``). A SizeInt meeting a tensor (``C * x``) leaves the operator to the
tensor, so the recorded call holds the size's node. Floats that Python makes without asking the
int (``0.5 * C``, ``1.0 / C``: float's own operators) are not seen.

Example:
    >>> import math
    >>> from torch import fx
    >>> graph = fx.Graph()
    >>> c = SizeInt(16, graph.call_method("size", (graph.placeholder("x"), 1)))
    >>> half, scale = c // 2, math.sqrt(c)
    >>> half, type(half).__name__, scale, c ** -0.5
    (8, 'SizeInt', 4.0, 0.25)
    >>> [n.target for n in graph.nodes if n.op == "call_function"]
    [<built-in function floordiv>, <class 'float'>, <class 'float'>]
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx
from typing_extensions import Self

from graphs.sources import innermost_user_frame


class SizeInt(int):
    """An int read from a tensor's shape, with the graph node that computes it.

    Arithmetic with ints keeps the link (``C // 2`` is a node too); a float made from it
    records a ``float`` node (see the module docstring).
    """

    node: fx.Node

    def __new__(cls, value: int, node: fx.Node) -> Self:
        self = super().__new__(cls, value)
        self.node = node
        node.meta["value"] = int(value)
        return self

    def __reduce__(self) -> tuple:
        """Copies and pickles are plain ints (a model may keep a shape it saw in forward)."""
        return int, (int(self),)

    __hash__ = int.__hash__  # __eq__ below would otherwise drop it

    def __eq__(self, other: object) -> bool:
        return compared(self, other, operator.eq)

    def __ne__(self, other: object) -> bool:
        return compared(self, other, operator.ne)

    def __float__(self) -> float:
        """``float(C)``, ``math.sqrt(C)``: the plain float, the conversion recorded."""
        return as_float(self, float(int(self)))


def compared(size: SizeInt, other: object, op: Callable[[Any, Any], bool]) -> bool:
    """``C == self.channels`` (``assert x.shape[1] == self.channels``): the plain answer; when
    the forward relied on a size being equal to a literal int, an ``eq`` node records it (the
    tracer then makes that number follow pruning, or blocks the channels)."""
    plain = int(other) if isinstance(other, SizeInt) else other
    value = op(int(size), plain)
    if type(plain) is int and not isinstance(other, SizeInt) and int(size) == plain:
        node = size.node.graph.call_function(operator.eq, (size.node, plain))
        node.meta["module"] = size.node.meta.get("module", "")
        node.stack_trace = innermost_user_frame()
    return value


def as_float(size: SizeInt, value: float) -> float:
    """Record that ``size`` became a float (a ``float`` node on the user's line); ``value``."""
    node = size.node.graph.call_function(float, (size.node,))
    node.stack_trace = innermost_user_frame()
    return value


def _arith(op: Callable[..., Any], reflected: bool) -> Callable[..., Any]:
    def apply(self: SizeInt, other: Any, *modulo: Any) -> Any:
        if isinstance(other, torch.Tensor):
            return NotImplemented  # the tensor's own operator records this size's node
        a, b = (other, self) if reflected else (self, other)
        plain = [int(v) if isinstance(v, SizeInt) else v for v in (a, b)]
        value = pow(*plain, *modulo) if modulo else op(*plain)
        if isinstance(value, float):
            for v in (a, b):
                if isinstance(v, SizeInt):
                    as_float(v, value)
            return value
        if modulo or type(value) is not int or not isinstance(other, int) \
                or isinstance(other, bool):
            return value
        args = tuple(v.node if isinstance(v, SizeInt) else int(v) for v in (a, b))
        return SizeInt(value, self.node.graph.call_function(op, args))
    return apply


for _op_name in ("add", "sub", "mul", "floordiv", "mod", "truediv", "pow"):
    _op = getattr(operator, _op_name)
    setattr(SizeInt, f"__{_op_name}__", _arith(_op, False))
    setattr(SizeInt, f"__r{_op_name}__", _arith(_op, True))
