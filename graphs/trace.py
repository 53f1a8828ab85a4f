"""The torch.fx adapter: trace a model, propagate shapes, run the coupling rules, build groups."""

from __future__ import annotations

import contextlib
import inspect
import linecache
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from graphs.context import TORCH_DIR, TraceContext
from graphs.errors import TraceError
from graphs.grouping import build_groups
from graphs.model import OUT, DependencyGraph
from graphs.rules import RuleTable, default_rules
from graphs.shapes import ShapeRunner


def trace(model: nn.Module, example_inputs: Any, *, ignore: Iterable[str] = (),
          rules: RuleTable | None = None) -> DependencyGraph:
    """Find the coupled channel groups of ``model`` called on ``example_inputs``.

    ``ignore`` names layers (or containers: every layer below them) whose output channels must stay.
    The model is traced in eval mode; its training flags and weights are left as they were.

    Example:
        >>> from surgery.io.models import LeNet
        >>> graph = trace(LeNet(), torch.zeros(1, 1, 28, 28))
        >>> [(g.channels, g.prunable) for g in graph.groups]
        [(1, False), (6, True), (16, True), (120, True), (84, True), (10, False)]
    """
    inputs = as_tuple(example_inputs)
    ignore = tuple(ignore)
    check_ignore(model, ignore)
    table = rules or default_rules()
    graph = symbolic_trace(model, leaves=table)
    with eval_mode(model):
        propagate_shapes(model, graph, inputs)
    ctx = TraceContext(model)
    for node in graph.nodes:
        ctx.flows[node] = run_rule(ctx, table, node)
    block_shared(ctx)
    block_ignored(ctx, ignore)
    return DependencyGraph(build_groups(ctx.sets), tuple(ctx.unsupported))


def as_tuple(example_inputs: Any) -> tuple:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def check_ignore(model: nn.Module, ignore: tuple[str, ...]) -> None:
    names = {n for n, _ in model.named_modules() if n}
    missing = [n for n in ignore if n not in names]
    if missing:
        some = ", ".join(sorted(names)[:12])
        raise TraceError(f"ignore names layers not in the model: {', '.join(missing)} "
                         f"(the model has e.g. {some})")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


def symbolic_trace(model: nn.Module, *, source_lines: bool = True,
                   leaves: RuleTable | None = None) -> fx.Graph:
    """torch.fx graph of ``model`` (eval mode); its targets name attributes of ``model`` itself.

    No GraphModule is built (``ShapeRunner`` interprets the graph over ``model``). With
    ``source_lines`` each node keeps the user source line that made it (see ``_Tracer``).
    Modules whose exact type has a rule in ``leaves`` stay leaves (one call_module node), like
    torch.nn modules. Errors say where the model broke tracing.
    """
    tracer = _Tracer(source_lines, leaves)
    try:
        with eval_mode(model):
            return tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, AttributeError, ... from user code
        raise TraceError(f"torch.fx cannot trace {type(model).__name__}: "
                         f"{type(exc).__name__}: {exc}{_user_frame(exc)}") from exc


class _Tracer(fx.Tracer):
    """fx.Tracer that stores only the innermost user frame as ``node.stack_trace``.

    fx's own ``record_stack_traces`` symbolises the whole stack for every node, which costs more
    than the rest of tracing; ``context.user_source`` only ever reads the innermost user frame.
    """

    def __init__(self, source_lines: bool, leaves: RuleTable | None = None) -> None:
        super().__init__()
        self.source_lines = source_lines
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (self.leaves is not None and type(m) in self.leaves) or \
            super().is_leaf_module(m, module_qualified_name)

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        if self.source_lines and not node.stack_trace:
            node.stack_trace = _innermost_user_frame()
        return node


def _innermost_user_frame() -> str:
    """The innermost calling frame outside torch and this file, formatted as fx formats frames."""
    frame = inspect.currentframe()
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(TORCH_DIR) and filename != __file__:
            code = linecache.getline(filename, frame.f_lineno).strip()
            return f'  File "{filename}", line {frame.f_lineno}, in {frame.f_code.co_name}\n' \
                   f"    {code}"
        frame = frame.f_back
    return ""


def _user_frame(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(TORCH_DIR) and not f.filename.endswith("graphs/trace.py")]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno}: {f.line})"


class _ShapeProp(ShapeRunner):
    """Records ``node.meta["tensor_meta"]`` like fx's ShapeProp, without computing convolutions."""

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except Exception as exc:  # any op may reject a wrongly shaped input
            shapes = [tuple(a.shape) for a in self.args_shapes(n)]
            raise TraceError(f"example input does not fit the model: node {n.name} "
                             f"({_target_name(n)}) got input shapes {shapes}: "
                             f"{type(exc).__name__}: {exc}") from exc
        found: list[TensorMetadata] = []
        meta = fx.node.map_aggregate(result, lambda v: _tensor_meta(v, found))
        if found:
            n.meta["tensor_meta"] = meta
        return result

    def args_shapes(self, n: fx.Node) -> list[torch.Tensor]:
        found: list[torch.Tensor] = []
        fx.node.map_arg((n.args, n.kwargs), lambda a: found.append(self.env.get(a)))
        return [t for t in found if isinstance(t, torch.Tensor)]


def _tensor_meta(value: Any, found: list[TensorMetadata]) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    meta = TensorMetadata(value.shape, value.dtype, value.requires_grad, value.stride(), None,
                          value.is_quantized, {})
    found.append(meta)
    return meta


def _target_name(n: fx.Node) -> str:
    return n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))


def propagate_shapes(model: nn.Module, graph: fx.Graph, inputs: tuple) -> None:
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) > len(placeholders) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise TraceError(f"the model takes {len(placeholders)} inputs; got {len(inputs)} "
                         f"example inputs of types {[type(t).__name__ for t in inputs]}")
    with torch.no_grad():
        _ShapeProp(model, graph).run(*inputs)


def run_rule(ctx: TraceContext, table: RuleTable, node: fx.Node) -> Any:
    if node.op == "placeholder":
        flow = ctx.fresh_like(node)
        if flow is not None:
            ctx.sets.block(flow.ids, "touches the model input")
        return flow
    if node.op == "output":
        for f in ctx.input_flows(node):
            ctx.sets.block(f.ids, "touches the model output")
        return None
    if node.op == "get_attr" or not _has_tensor_output(node):
        return None
    key = type(ctx.module(node)) if node.op == "call_module" else node.target
    rule = table.lookup(node.op, key)
    if rule is None:
        name = key.__name__ if hasattr(key, "__name__") else str(key)
        return ctx.reject(node, name)
    return rule(ctx, node)


def _has_tensor_output(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):
        return True
    return isinstance(meta, (tuple, list)) and any(isinstance(m, TensorMetadata) for m in meta)


def block_shared(ctx: TraceContext) -> None:
    for rec in ctx.sets.records:
        if ctx.calls[rec.module] > 1:
            ctx.sets.block(rec.ids, f"layer {rec.module} is called {ctx.calls[rec.module]} times")


def block_ignored(ctx: TraceContext, ignore: tuple[str, ...]) -> None:
    for rec in ctx.sets.records:
        hit = next((n for n in ignore if rec.module == n or rec.module.startswith(n + ".")), None)
        if hit is not None and rec.role == OUT:
            ctx.sets.block(rec.ids, f"ignored layer {rec.module}")

