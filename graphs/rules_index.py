"""Indexing: ``x[...]`` with slices, ints, None and Ellipsis, a prefix slice of channels
(``x[:, :self.out_chs]``), a gather by one integer tensor (``table[idx]``), and the picking of
one output of a split; ``index_dim`` maps a dim through an index."""

from __future__ import annotations

import operator

import torch
from torch import fx

from graphs.channels import Flow
from graphs.context import TraceContext
from graphs.sizes import size_follows
from graphs.sources import at_source
from graphs.table import method


def getitem(ctx: TraceContext, node: fx.Node):
    """Pick an output of a split, or index a tensor without touching its channel dim."""
    source, index = node.args
    value = ctx.flows.get(source)
    if isinstance(value, tuple):
        return value[index]
    x, shape = ctx.flow(source), ctx.shape(source)
    if x is None or shape is None:
        return None
    index = index if isinstance(index, tuple) else (index,)
    tensors = [i for i, item in enumerate(index) if isinstance(item, fx.Node)]
    if tensors:
        return _gather(ctx, node, x, index, tensors)
    new_dim = index_dim(index, x.dim, len(shape))
    at = _channel_item(index, x.dim, len(shape))
    if new_dim is None and at is not None and isinstance(index[at], slice):
        return _prefix(ctx, node, x, index, at, shape)
    if new_dim is None and _picks_one(index, x.dim):
        ctx.sets.block(x.ids, f"getitem at node {node.name} picks one channel by a literal "
                              f"index{at_source(node)}")
        return None  # the result has no channel dim left to track
    if new_dim is None:
        return ctx.reject(node, "getitem", "indexes the channel dim")
    return Flow(x.ids, new_dim)


def _prefix(ctx: TraceContext, node: fx.Node, x: Flow, index: tuple, at: int,
            shape: tuple) -> Flow | None:
    """``x[:, :n]``: the first n channels go on, the rest are dropped (dead here).

    After pruning, n must be the count of kept channels among the first n: a slice past the end
    keeps every channel (nothing to update), a literal n equal to one int attribute of the
    module (``self.out_chs``) becomes a SIZE member. Any other slice blocks the channels.
    """
    item = index[at]
    start, stop, step = item.start, item.stop, item.step
    dim = index_dim(index[:at] + (slice(None),) + index[at + 1:], x.dim, len(shape))
    if start not in (None, 0) or step not in (None, 1) or not isinstance(stop, int) \
            or stop < 0 or dim is None:
        return ctx.reject(node, "getitem", "slices the channel dim other than as a prefix "
                                           "x[:, :n] with a literal n")
    y = Flow(x.ids[:stop], dim)
    if stop >= x.size:
        return y
    problem = size_follows(ctx, node, stop, y, x)
    if problem:
        ctx.sets.block(x.ids, f"getitem at node {node.name} keeps the first {stop} channels, "
                              f"{problem}{at_source(node)}")
    return y


def _channel_item(index: tuple, dim: int, ndim: int) -> int | None:
    """Position in ``index`` of the item that indexes dim ``dim`` (None: no item does)."""
    pos_in = 0
    for i, item in enumerate(index):
        if item is None:
            continue
        if item is Ellipsis:
            rest = sum(1 for it in index[i + 1:] if it is not None)
            skip = ndim - pos_in - rest
            if pos_in <= dim < pos_in + skip:
                return None
            pos_in += skip
            continue
        if pos_in == dim:
            return i
        pos_in += 1
    return None


def _gather(ctx: TraceContext, node: fx.Node, x: Flow, index: tuple, tensors: list[int]):
    """``table[idx]`` or ``biases[:, idx]``: one integer tensor (no channels of its own) picks
    positions along a dim before or after the channels, the other items being full slices: its
    dims replace the indexed dim. Anything else (the channels indexed, several tensors, a bool
    mask) is reported."""
    item = index[tensors[0]] if len(tensors) == 1 else None
    meta = item.meta.get("tensor_meta") if item is not None else None
    plain = all(isinstance(i, slice) and i == slice(None) for j, i in enumerate(index)
                if j != tensors[0])
    if meta is None or meta.dtype.is_floating_point or meta.dtype == torch.bool or not plain \
            or ctx.flow(item) is not None or tensors[0] == x.dim:
        return ctx.reject(node, "getitem", "indexes the channel dim or by several tensors")
    return Flow(x.ids, x.dim if x.dim < tensors[0] else x.dim + len(meta.shape) - 1)


def _picks_one(index: tuple, dim: int) -> bool:
    """``x[:, k]``: plain slices before an int at the channel position."""
    head = index[:dim]
    return len(index) > dim and isinstance(index[dim], int) and all(
        isinstance(i, slice) and i == slice(None) for i in head)


def index_dim(index: tuple, dim: int, ndim: int) -> int | None:
    """Where dim ``dim`` lands after ``tensor[index]``; None if the index selects channels.

    Example:
        >>> index_dim((slice(None), slice(None), 0), 1, 4), index_dim((0,), 0, 2)
        (1, None)
    """
    pos_in, pos_out = 0, 0
    for i, item in enumerate(index):
        if item is None:
            pos_out += 1
            continue
        if item is Ellipsis:
            rest = sum(1 for it in index[i + 1:] if it is not None)
            skip = ndim - pos_in - rest
            if pos_in <= dim < pos_in + skip:
                return dim - pos_in + pos_out
            pos_in, pos_out = pos_in + skip, pos_out + skip
            continue
        full = isinstance(item, slice) and item == slice(None)
        if pos_in == dim:
            return pos_out if full else None
        if not isinstance(item, (int, slice)):
            return None  # advanced indexing: give up
        pos_in, pos_out = pos_in + 1, pos_out + (0 if isinstance(item, int) else 1)
    return dim - pos_in + pos_out


def register_all(table) -> None:
    table.register([operator.getitem] + method("__getitem__"), getitem)
