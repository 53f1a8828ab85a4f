"""view/reshape: where the channel dim goes, and whether the sizes written in forward() follow it.

A reshape may (1) keep the channel dim whole while other dims merge or split around it, (2)
merge it with neighbours (flatten: each channel becomes a run of features), or (3) split it:
the last dim into (heads, head_dim) or (3, heads, head_dim) at the end of the shape (attention:
whole heads are the channels, every position of a head goes with it), or else into
(groups, C/groups) (a channel shuffle, or ResNeSt's radix split of a pooled (B, R*C, 1, 1)
map: position j of every group goes together).

After pruning, the target size of the dim that carries channels changes, so forward() must not
write it as a fixed number. It follows when it is -1 or read from a tensor dim carrying the same
channels (``x.size(1)``). A literal equal to exactly one int attribute of the calling module (or
a parent) is that attribute (``self.num_heads``, ``self.all_head_size``): it becomes a SIZE
member, set to the kept count after pruning. Anything else blocks the channels with the line.

Example:
    >>> kept_dim((2, 8, 8, 16), (2, 2, 4, 2, 4, 16), 3), kept_dim((2, 6, 4), (2, 3, 8), 1)
    (5, None)
"""

from __future__ import annotations

import math

import numpy as np
from torch import fx

from graphs.channels import Flow
from graphs.context import TraceContext, arg
from graphs.rules.shape import flatten_ids
from graphs.sizes import block_reads, evaluate, size_follows
from graphs.sources import at_source


def reshape(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """The flow after a view/reshape (see the module docstring), or a block with the line."""
    return _reshape(ctx, node, shape_args(node))


def unflatten(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """``x.unflatten(dim, sizes)``: a reshape whose other sizes are the input's own."""
    before = ctx.shape(node.args[0])
    dim, sizes = (arg(node, 1, "dim"), arg(node, 2, "sizes"))
    if before is None or not isinstance(dim, int) or not isinstance(sizes, (list, tuple)):
        return _reshape(ctx, node, None)
    dim %= len(before)
    return _reshape(ctx, node, [-2] * dim + list(sizes) + [-2] * (len(before) - dim - 1))


def reshape_as(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """``x.reshape_as(other)`` (LeViT's ``bn(x.flatten(0, 1)).reshape_as(x)``): a reshape to
    ``other``'s shape. The size of the dim that carries channels follows pruning only when
    ``other`` carries the same channels on that dim; otherwise both tensors' channels block."""
    other, shape = ctx.flow(node.args[1]), ctx.shape(node.args[1])
    if shape is None:
        return _reshape(ctx, node, None)
    sizes = [-1 if other is not None and d == other.dim else n for d, n in enumerate(shape)]
    y = _reshape(ctx, node, sizes)
    if y is not None and other is not None and other.dim == y.dim and other.size == y.size:
        ctx.sets.union(y.ids, other.ids)  # its width is read from other's: they go together
    elif y is not None and y.size > 1:
        _block(ctx, node, y, f"the shape of {node.args[1]}, whose channels are not these")
        if other is not None:
            _block(ctx, node, other, "its shape taken for other channels")
    return y


def _reshape(ctx: TraceContext, node: fx.Node, sizes: list | None) -> Flow | None:
    """``sizes``: what forward() wrote per output dim (-2: kept from the input as it is)."""
    x, before, after = ctx.flow(node.args[0]), ctx.shape(node.args[0]), ctx.shape(node)
    if x is None or before is None or after is None:
        return None
    kept = kept_dim(before, after, x.dim)
    if kept is not None:
        return _checked(ctx, node, sizes, Flow(x.ids, kept), [])
    for start in range(len(before)):
        for end in range(start + 1, len(before)):
            merged = before[:start] + (math.prod(before[start:end + 1]),) + before[end + 1:]
            if merged == after and start <= x.dim <= end:
                return _checked(ctx, node, sizes, flatten_ids(x, before, start, end), [])
    found = split_dims(before, after, x.dim)
    if found is None:
        return ctx.reject(node, str(node.target), f"reshape {before} -> {after} splits channels")
    k, parts = found
    heads = k + len(parts) == len(after) and x.dim == len(before) - 1
    at = k + len(parts) - 2 if heads else k + len(parts) - 1
    pieces = np.moveaxis(x.ids.reshape(parts), at - k, 0).reshape(parts[at - k], -1)
    for column in pieces.T[1:]:
        ctx.sets.union(pieces[:, 0], column)
    fixed = [d for d in range(k, k + len(parts)) if d != at]
    return _checked(ctx, node, sizes, Flow(pieces[:, 0].copy(), at), fixed)


def kept_dim(before: tuple, after: tuple, dim: int) -> int | None:
    """Where dim ``dim`` stands after a reshape that keeps it whole, or None.

    Row-major order puts element (outer, c, inner) at the same flat position before and after,
    so the dim is kept when some dim k of ``after`` has its size and the products of the dims
    before and after it agree.
    """
    outer, inner = math.prod(before[:dim]), math.prod(before[dim + 1:])
    for k, size in enumerate(after):
        if size == before[dim] and math.prod(after[:k]) == outer \
                and math.prod(after[k + 1:]) == inner:
            return k
    return None


def split_dims(before: tuple, after: tuple, dim: int) -> tuple[int, tuple[int, ...]] | None:
    """(k, parts): dim ``dim`` becomes dims k.. of ``after`` with sizes ``parts`` (2 or 3).

    Example:
        >>> split_dims((2, 5, 48), (2, 5, 3, 4, 4), 2)
        (2, (3, 4, 4))
    """
    outer, inner = math.prod(before[:dim]), math.prod(before[dim + 1:])
    for k in range(len(after)):
        if math.prod(after[:k]) != outer:
            continue
        for r in (2, 3):
            parts = tuple(after[k:k + r])
            if len(parts) == r and math.prod(parts) == before[dim] and min(parts) > 1 \
                    and math.prod(after[k + r:]) == inner:
                return k, parts
    return None


def shape_args(node: fx.Node) -> list | None:
    """The target sizes of a view/reshape node (ints, -1 or nodes); None if not readable."""
    rest = list(node.args[1:]) or [node.kwargs.get("shape", node.kwargs.get("size"))]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        rest = list(rest[0])
    return rest if all(isinstance(r, (int, fx.Node)) for r in rest) else None


def _checked(ctx: TraceContext, node: fx.Node, sizes: list | None, y: Flow,
             fixed: list[int]) -> Flow:
    """``y``, after checking the size written for its dim and that the other dims stay.

    A size that does not follow blocks ``y`` and the channels it was read from (``block_reads``).
    A size computed from tensors' dims is checked once the whole graph is traced: the tensor it
    reads may be coupled with ``y`` only by a later op (ResNeSt multiplies by it).
    ``fixed``: the dims that split off ``y``'s (named in the line).
    """
    if y.size <= 1:
        return y
    if sizes is None or len(sizes) != len(ctx.shape(node)):
        return _block(ctx, node, y, "sizes that cannot be read")
    x, count = ctx.flow(node.args[0]), None
    if not isinstance(sizes[y.dim], fx.Node):
        problem = size_follows(ctx, node, sizes[y.dim], y, x)
        if problem:
            _block(ctx, node, y, problem)
        elif sizes[y.dim] not in (-1, -2):
            count = sizes[y.dim]  # an attribute (num_heads) counts y's channels
    if any(isinstance(size, fx.Node) for size in sizes):
        ctx.defer(lambda: _check_computed(ctx, node, sizes, y, x, fixed, count))
    return y


def _check_computed(ctx: TraceContext, node: fx.Node, sizes: list, y: Flow, x: Flow,
                    fixed: list[int], count: int | None) -> None:
    """Block ``y`` and the channels its sizes read unless its computed size scales with ``x``'s
    channels and the computed sizes of the other dims do not (``C // self.num_heads``, with
    ``count`` the attribute's value that counts y: pruned alike, C and it keep the head width).
    """
    problem = size_follows(ctx, node, sizes[y.dim], y, x) \
        if isinstance(sizes[y.dim], fx.Node) else ""
    wrong = [y.dim] if problem else []
    for d, size in enumerate(sizes):
        if d != y.dim and isinstance(size, fx.Node) and \
                evaluate(ctx, size, x, 2, 7, count) != evaluate(ctx, size, x, 1, 1, count):
            wrong.append(d)
            problem = problem or (f"a split size computed from a channel count at dim {d}"
                                  if d in fixed else f"a size computed from a channel count "
                                                     f"at dim {d}")
    if problem:
        _block(ctx, node, y, problem)
        for d in wrong:
            block_reads(ctx, sizes[d], _line(node, f"a size read from these channels ({problem})"))


def _block(ctx: TraceContext, node: fx.Node, y: Flow, problem: str) -> Flow:
    ctx.sets.block(y.ids, _line(node, problem))
    return y


def _line(node: fx.Node, problem: str) -> str:
    return f"{node.target} at node {node.name} has {problem}{at_source(node)}"
