"""What a coupling rule sees: the captured graph, the flows computed so far, and the channel sets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from graphs.channels import ChannelSets, Flow
from graphs.datamodel import Unsupported
from graphs.sources import user_source


@dataclass
class TraceContext:
    """Per-trace state handed to every rule. Rules read flows and shapes, and write to ``sets``.

    ``root`` is the traced model: ``call_module`` targets name its submodules; ``params`` maps
    each ``get_attr`` target (a qualified parameter or buffer name) to its tensor.
    """

    root: nn.Module
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    sets: ChannelSets = field(default_factory=ChannelSets)
    flows: dict[fx.Node, Any] = field(default_factory=dict)
    unsupported: list[Unsupported] = field(default_factory=list)
    calls: Counter = field(default_factory=Counter)
    deferred: list[Callable[[], None]] = field(default_factory=list)
    by_name: dict[str, nn.Module] = field(default_factory=dict)  # filled by ``submodule``

    def defer(self, check: Callable[[], None]) -> None:
        """Run ``check`` once every rule has run (``finish``): a check that asks whether two
        tensors carry the same coupled channels, which a later op may couple."""
        self.deferred.append(check)

    def finish(self) -> None:
        """Run the deferred checks, in the order they came."""
        for check in self.deferred:
            check()

    def flow(self, arg: Any) -> Flow | None:
        value = self.flows.get(arg) if isinstance(arg, fx.Node) else None
        return value if isinstance(value, Flow) else None

    def module(self, node: fx.Node) -> nn.Module:
        return self.submodule(node.target)

    def submodule(self, name: str) -> nn.Module:
        """``root.get_submodule(name)`` from one walk of the model (rules ask thousands of times)."""
        if not self.by_name:
            self.by_name.update(self.root.named_modules(remove_duplicate=False))
        found = self.by_name.get(name)
        return found if found is not None else self.root.get_submodule(name)  # its error

    def shape(self, node: Any) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if hasattr(meta, "shape") else None

    def input_flows(self, node: fx.Node) -> list[Flow]:
        found: list[Flow] = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(self.flows.get(a)))
        return [f for f in _flatten_values(found) if isinstance(f, Flow)]

    def fresh_like(self, node: fx.Node) -> Flow | None:
        """New elements for a tensor output whose channels we cannot relate to anything (dim 1)."""
        shape = self.shape(node)
        if not shape:  # no tensor, or a scalar: no channel dim
            return None
        dim = 1 if len(shape) >= 2 else 0
        return Flow(self.sets.fresh(shape[dim]), dim)

    def untracked_input(self, node: fx.Node, x: Flow | None, size: int) -> Flow:
        """Fresh, blocked input channels for a layer whose input features are not a traced
        dim (a model input laid out channels-last); the channels it had stay too."""
        reason = f"the input of {node.name} carries no traced channels" if x is None else \
            f"the input features of {node.name} are not the tracked dimension"
        if x is not None:
            self.sets.block(x.ids, reason)
        fresh = self.sets.fresh(size)
        self.sets.block(fresh, reason)
        return Flow(fresh, 0)

    def reject(self, node: fx.Node, op: str, why: str = "") -> Flow | None:
        """Report an op we have no rule for: its inputs and output channels are not prunable."""
        owner, source = node.meta.get("module", ""), user_source(node.stack_trace or "")
        self.unsupported.append(Unsupported(node.name, op + (f" ({why})" if why else ""),
                                            owner, source))
        reason = f"unsupported op {op} at node {node.name}" + (f" in {owner!r}" if owner else "")
        return self.block_through(node, reason)

    def block_through(self, node: fx.Node, reason: str) -> Flow | None:
        """Block the channels of every input and of fresh output channels of ``node`` (none when
        no input carried channels)."""
        flows = self.input_flows(node)
        if not flows:
            return None
        for f in flows:
            self.sets.block(f.ids, reason)
        meta = node.meta.get("tensor_meta")
        if not getattr(getattr(meta, "dtype", None), "is_floating_point", False):
            return None  # indices, masks (argmax, topk's indices): positions, not channels
        out = self.fresh_where_input_was(node) or self.fresh_like(node)
        if out is not None:
            self.sets.block(out.ids, reason)
        return out

    def fresh_where_input_was(self, node: fx.Node) -> Flow | None:
        """New elements on the dim (counted from the end) where an input carried its channels,
        so that layers after an unsupported op still find channels-last tensors on the last dim."""
        shape = self.shape(node)
        for arg in node.all_input_nodes:
            f, arg_shape = self.flow(arg), self.shape(arg)
            if shape and f is not None and arg_shape is not None:
                dim = len(shape) + f.dim - len(arg_shape)
                if 0 <= dim < len(shape) and shape[dim] == f.size:
                    return Flow(self.sets.fresh(f.size), dim)
        return None


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` of ``node``, or keyword ``name``, or ``default``."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def op_name(node: fx.Node) -> str:
    """The op of a node in words: a method name, or a function's name."""
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "?")


def _flatten_values(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        out.extend(_flatten_values(list(v)) if isinstance(v, (tuple, list)) else [v])
    return out
