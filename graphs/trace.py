"""trace(): capture the model's real forward, run the coupling rules, build the channel groups."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from graphs.capture import capture
from graphs.context import TraceContext
from graphs.datamodel import OUT, DependencyGraph
from graphs.errors import Refused, TraceError
from graphs.grouping import build_groups_and_sites
from graphs.rules.defaults import default_rules
from graphs.rules.params import bare_parameter
from graphs.rules.table import RuleTable
from graphs.sharing import couple_shared
from graphs.sources import at_source

__all__ = ["ignored_names", "run_rule", "trace"]


def trace(model: nn.Module, example_inputs: Any, *, ignore: Iterable[str | nn.Module] = (),
          rules: RuleTable | None = None) -> DependencyGraph:
    """Find the coupled channel groups of ``model`` called on ``example_inputs``.

    ``example_inputs``: a tensor, a tuple/list of positional inputs or a dict of keyword inputs
    (``graphs.inputs``). ``ignore`` names layers (or containers: every layer below them; names
    or the modules themselves) whose output channels must stay. The model runs once in eval
    mode (``graphs.capture``); its training flags and weights are left as they were.

    Example:
        >>> import torch
        >>> from surgery.io.models import LeNet
        >>> graph = trace(LeNet(), torch.zeros(1, 1, 28, 28))
        >>> [(g.channels, g.prunable) for g in graph.groups]
        [(1, False), (6, True), (16, True), (120, True), (84, True), (10, False)]
    """
    ignore = ignored_names(model, ignore)
    table = rules or default_rules()
    captured = capture(model, example_inputs, leaf=lambda m: table.kind_of(m) is not None)
    ctx = TraceContext(model, captured.params)
    try:
        for node in captured.graph.nodes:
            ctx.flows[node] = run_rule(ctx, table, node)
        ctx.finish()
        couple_shared(ctx.sets, ctx.root, ctx.calls)
        block_ignored(ctx, ignore)
        groups, sites = build_groups_and_sites(ctx.sets)
    finally:  # the deferred checks hold ctx (a cycle): let its tensors go now, not at a gc
        ctx.deferred.clear()
        ctx.params.clear()
    return DependencyGraph(groups, tuple(ctx.unsupported), captured.notes, sites)


def ignored_names(model: nn.Module, ignore: Iterable[str | nn.Module]) -> tuple[str, ...]:
    """Qualified names of the layers in ``ignore`` (a name, a module, or a list of them)."""
    items = [ignore] if isinstance(ignore, (str, nn.Module)) else list(ignore)
    by_module = {id(m): n for n, m in model.named_modules() if n}
    names = {n for n, _ in model.named_modules() if n}
    found, missing = [], []
    for item in items:
        name = by_module.get(id(item)) if isinstance(item, nn.Module) else item
        (found if name in names else missing).append(name if name is not None else
                                                     type(item).__name__)
    if missing:
        some = ", ".join(sorted(names)[:12])
        raise TraceError(f"ignore names layers not in the model: {', '.join(map(str, missing))} "
                         f"(the model has e.g. {some})")
    return tuple(found)


def run_rule(ctx: TraceContext, table: RuleTable, node: fx.Node) -> Any:
    if node.op == "placeholder":
        meta = node.meta.get("tensor_meta")
        if meta is None or not meta.dtype.is_floating_point:
            return None  # token ids, masks: positions, not channels
        flow = ctx.fresh_like(node)
        if flow is not None:
            ctx.sets.block(flow.ids, "touches the model input")
        return flow
    if node.op == "output":
        for f in ctx.input_flows(node):
            ctx.sets.block(f.ids, "touches the model output")
        return None
    if node.op == "get_attr":
        return bare_parameter(ctx, node)
    if not _has_tensor_output(node) and node.target not in (float, operator.eq):
        # float: a size made a scale; eq: a size the forward compared with a number
        return None
    key = ctx.module(node) if node.op == "call_module" else node.target
    rule = table.lookup(node.op, key)
    name = type(key).__name__ if node.op == "call_module" else \
        key if isinstance(key, str) else getattr(key, "__name__", str(key))
    if rule is None:
        return ctx.reject(node, name) if ctx.input_flows(node) else None
    try:
        return rule(ctx, node)
    except Refused as exc:
        return ctx.reject(node, name, str(exc))
    except Exception as exc:  # a rule that fails is a bug: never hidden as "unsupported"
        raise TraceError(f"the coupling rule {rule.__module__}.{rule.__name__} failed on "
                         f"{name} at node {node.name}{at_source(node)} (a bug: please report "
                         f"it): {type(exc).__name__}: {exc}") from exc


def _has_tensor_output(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):
        return True
    return isinstance(meta, (tuple, list)) and any(isinstance(m, TensorMetadata) for m in meta)


def block_ignored(ctx: TraceContext, ignore: tuple[str, ...]) -> None:
    for rec in ctx.sets.records:
        hit = next((n for n in ignore if rec.module == n or rec.module.startswith(n + ".")), None)
        if hit is not None and rec.role == OUT:
            ctx.sets.block(rec.ids, f"ignored layer {rec.module}")
