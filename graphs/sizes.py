"""Does a size written in forward() follow pruning? The shared check of reshape and split.

A size follows when it is -1, or computed from reads of the input's own channel count (checked
by evaluating it with those reads doubled: the size must double), or a literal equal to exactly
one int attribute of the calling module (``self.num_heads``): that attribute becomes
a SIZE member, set to the kept count after pruning.

A size that does not follow blocks the channels it is written for, and also the channels it was
read from (``block_reads``): ``B, N, C = x.shape`` then ``self.v(x).reshape(B, N, H, C // H)``
ties v's heads to x's width, which no element coupling expresses, so neither may be pruned.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> class Heads(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.num_heads, self.fc = 2, torch.nn.Linear(4, 8)
    ...     def forward(self, x):
    ...         return self.fc(x).view(1, 3, self.num_heads, 4).sum(-1)
    >>> group = trace(Heads(), torch.zeros(1, 3, 4)).groups[1]
    >>> [m.short() for m in group.members]
    ['fc.out x4', 'num_heads.size']
"""

from __future__ import annotations

import operator

from torch import fx, nn

from graphs.channels import Flow
from graphs.context import TraceContext, op_name
from graphs.datamodel import SIZE
from graphs.sources import at_source


def size_follows(ctx: TraceContext, node: fx.Node, size, y: Flow, x: Flow) -> str:
    """"" when the size written for ``y``'s dim follows pruning; else why not.

    A computed size must scale with the input's channel count: evaluated with every read of
    those channels doubled (and reads of other channels changed), it must double.
    """
    if isinstance(size, fx.Node):
        scaled, base = evaluate(ctx, size, x, 2, 7), evaluate(ctx, size, x, 1, 1)
        return "" if base is not None and scaled == 2 * base else "a size computed from " \
            "other dims"
    if size in (-1, -2):  # -1: inferred; -2: kept from the input as it is (unflatten)
        return ""
    owner, attr = size_attribute(ctx, node, size, y)
    if not attr:
        return owner or f"a literal channel size {size}"
    ctx.sets.record(owner, SIZE, 0, y.ids, attr)
    return ""


def norm_shape_follows(ctx: TraceContext, node: fx.Node, shape: tuple, x: Flow) -> None:
    """Make the ``normalized_shape`` of a norm with no weights of its own follow pruning of
    ``x``'s channels (its last dim), or block them.

    ``nn.LayerNorm(C, elementwise_affine=False)`` passes its literal ``self.normalized_shape``:
    a literal equal to one tuple attribute of the calling module becomes a SIZE member (its last
    element), as does one equal to one int attribute; a size read from ``x``'s own width follows.
    Any other size blocks ``x`` and the channels it was read from, with the reason.
    """
    size = shape[-1]
    if not isinstance(size, fx.Node):
        owner, attr = size_attribute(ctx, node, tuple(shape))
        if attr:
            ctx.sets.record(owner, SIZE, len(shape) - 1, x.ids, attr)
            return

    def check() -> None:
        problem = size_follows(ctx, node, size, x, x)
        if problem:
            reason = f"{op_name(node)} at node {node.name} normalises over {problem}"
            ctx.sets.block(x.ids, reason)
            block_reads(ctx, size, reason)

    if isinstance(size, fx.Node):
        ctx.defer(check)
    else:
        check()


def group_count_follows(ctx: TraceContext, node: fx.Node, groups: int, x: Flow) -> None:
    """Make a weightless ``nn.GroupNorm`` (``affine=False``) follow pruning of ``x``'s channels:
    ``num_channels`` becomes a SIZE member, and ``num_groups`` one too when whole groups go
    (1 < G: one position per group). Groups from anything else block ``x``, with the reason.
    """
    name = node.meta.get("module", "")
    module = ctx.submodule(name)
    if isinstance(module, nn.GroupNorm) and module.num_channels == x.size:
        ctx.sets.record(name, SIZE, 0, x.ids, "num_channels")
        if groups > 1:
            ctx.sets.record(name, SIZE, 0, x.ids[::x.size // groups], "num_groups")
    elif groups > 1:
        ctx.sets.block(x.ids, f"{op_name(node)} at node {node.name} has {groups} groups, "
                              f"counted by no nn.GroupNorm")


def block_reads(ctx: TraceContext, size, reason: str) -> None:
    """Block every channel dim read in the computed size ``size``: pruning them changes it."""
    for ids in channel_reads(ctx, size):
        ctx.sets.block(ids, reason)


def channel_reads(ctx: TraceContext, size) -> list:
    """The element ids of every channel dim that the computed size ``size`` reads."""
    if not isinstance(size, fx.Node):
        return []
    source = _size_source(size)
    if source is not None:
        flow = ctx.flow(source[0])
        return [flow.ids] if flow is not None and flow.dim == source[1] else []
    if size.op == "call_function" and size.target in _ARITHMETIC:
        return [ids for a in size.args for ids in channel_reads(ctx, a)]
    return []


_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.mod,
               operator.pow}


def mark_scale(ctx: TraceContext, node: fx.Node, values) -> None:
    """Mark inexact the channels that any size among ``values`` (node arguments: sizes, or
    tensors, skipped) was read from: ``node`` makes a value of it (``x / C``, ``float(C)``,
    ``torch.tensor(C)``), which pruning those channels changes (``graphs.rules.scales``)."""
    sizes: list[fx.Node] = []
    fx.node.map_arg(values, lambda a: sizes.append(a) if ctx.shape(a) is None else None)
    for size in sizes:
        for ids in channel_reads(ctx, size):
            ctx.sets.approximate(ids, f"a scale read from the channel count at node "
                                      f"{node.name}{at_source(node)}")


def evaluate(ctx: TraceContext, size, x: Flow, same: int, other: int,
             count: int | None = None) -> int | None:
    """The value of a computed size with reads of ``x``'s channels scaled by ``same`` and reads
    of other channel dims by ``other`` (None if it uses anything else); a literal equal to
    ``count`` (an attribute that counts x's channels: ``C // self.num_heads``) scales by
    ``same`` too."""
    if not isinstance(size, fx.Node):
        return None if not isinstance(size, int) else size * same if size == count else size
    source = _size_source(size)
    if source is not None:
        flow = ctx.flow(source[0])  # the model input's dims never change: a constant
        scale = 1 if flow is None or flow.dim != source[1] or source[0].op == "placeholder" \
            else same if ctx.sets.same_channels(flow.ids, x.ids) else other
        return size.meta["value"] * scale
    if size.op == "call_function" and size.target in _ARITHMETIC:
        values = [evaluate(ctx, a, x, same, other, count) for a in size.args]
        return None if None in values or (size.target in (operator.floordiv, operator.mod)
                                          and values[1] == 0) else size.target(*values)
    return None


def _size_source(size: fx.Node) -> tuple[fx.Node, int] | None:
    """(tensor node, dim) when ``size`` is a direct read of one dim of a tensor."""
    if size.op == "call_method" and size.target == "size" and len(size.args) == 2:
        shape = size.args[0].meta.get("tensor_meta")
        return size.args[0], size.args[1] % len(shape.shape)
    if size.target is operator.getitem and isinstance(size.args[0], fx.Node) \
            and size.args[0].target == "size":
        return size.args[0].args[0], size.args[1]
    return None


def size_attribute(ctx: TraceContext, node: fx.Node, value, y: Flow | None = None
                   ) -> tuple[str, str]:
    """(module, attribute) of the one int attribute equal to ``value`` (or, for a tuple or
    list of ints, the one tuple or list attribute equal to it) of the calling module; ("why
    not", "") when there is none or several. Of several, the one a rule already counts ``y``'s
    channels with (a SIZE member: Conv1D's ``nf`` against its ``nx`` of the same value) is the
    one. A parent's attribute is never taken: Phi-3's attention slices q at ``config.heads *
    head_dim``, which equals its decoder layer's ``hidden_size`` but does not follow it."""
    module = node.meta.get("module", "")
    found = [k for k, v in vars(ctx.submodule(module)).items()
             if _same_size(v, value) and not k.startswith("_")]
    if len(found) > 1 and y is not None:
        found = [k for k in found if _counts(ctx, module, k, y)] or found
    if len(found) == 1:
        return module, found[0]
    if len(found) > 1:
        return f"a literal channel size {value} that matches {found} of {module!r}", ""
    return "", ""


def _counts(ctx: TraceContext, module: str, attr: str, y: Flow) -> bool:
    """Whether a SIZE member of ``module.attr`` already counts ``y``'s channels."""
    return any(r.module == module and r.role == SIZE and r.attr == attr
               and r.ids.shape == y.ids.shape and ctx.sets.same_channels(r.ids, y.ids)
               for r in ctx.sets.records)


def _same_size(attribute, value) -> bool:
    """An int attribute equal to int ``value``, or a tuple/list of ints equal to ``value``."""
    if isinstance(value, (tuple, list)):
        return isinstance(attribute, (tuple, list)) and len(attribute) == len(value) \
            and all(type(a) is int for a in attribute) and list(attribute) == list(value)
    return type(attribute) is int and attribute == value
