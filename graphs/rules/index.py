"""Indexing: ``x[...]`` with slices, ints, None and Ellipsis, a slice of channels
(``x[:, :self.out_chs]``, a fused projection's ``qkv[..., n:2 * n]``), a gather by one integer tensor (``table[idx]``), and the picking of
one output of a split; ``index_dim`` maps a dim through an index."""

from __future__ import annotations

import math

import torch
from torch import fx

from graphs.channels import Flow
from graphs.context import TraceContext
from graphs.datamodel import SIZE
from graphs.sizes import block_reads, size_attribute, size_follows
from graphs.sources import at_source


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
        return _slice(ctx, node, x, index, at, shape)
    if new_dim is None and _picks_one(index, x.dim):
        ctx.sets.block(x.ids, f"getitem at node {node.name} picks one channel by a literal "
                              f"index{at_source(node)}")
        return None  # the result has no channel dim left to track
    if new_dim is None:
        return ctx.reject(node, "getitem", "indexes the channel dim")
    return Flow(x.ids, new_dim)


def _slice(ctx: TraceContext, node: fx.Node, x: Flow, index: tuple, at: int,
           shape: tuple) -> Flow | None:
    """``x[:, a:b]``: channels a..b-1 go on, the rest are dropped here (used by other slices or
    dead). After pruning, each bound inside the channels must be the kept count before it
    (``bounds_follow``); a bound of 0 or past the end needs nothing. Otherwise the channels
    are blocked, with the line, and so are those a computed bound was read from."""
    item = index[at]
    dim = index_dim(index[:at] + (slice(None),) + index[at + 1:], x.dim, len(shape))
    bounds = [b for b in (item.start, item.stop) if b is not None]
    values = [b if type(b) is int else b.meta.get("value") if isinstance(b, fx.Node) else None
              for b in bounds]
    if item.step not in (None, 1) or dim is None or any(
            not isinstance(v, int) or v < 0 for v in values):
        return ctx.reject(node, "getitem", "slices the channel dim with a step or with "
                                           "negative or unreadable bounds")
    start = values[0] if item.start is not None else 0
    stop = values[-1] if item.stop is not None else x.size
    y = Flow(x.ids[start:stop], dim)
    inner = [(b, v) for b, v in zip(bounds, values) if 0 < v < x.size]
    problem = bounds_follow(ctx, node, x, inner) if inner else ""
    if problem:
        taken = f"keeps the first {stop} channels" if start == 0 else \
            f"takes channels {start}:{stop}"
        line = f"getitem at node {node.name} {taken}, {problem}{at_source(node)}"
        ctx.sets.block(x.ids, line)
        for bound, _ in inner:
            block_reads(ctx, bound, line + " read from these channels")
    return y


def bounds_follow(ctx: TraceContext, node: fx.Node, x: Flow, inner: list) -> str:
    """"" when the slice bounds ``inner`` ((written, value) pairs inside x's channels) follow
    pruning, else why not. Literal bounds that are each one int attribute (``self.out_chs``,
    ``x[:, self.a:]``) count the channels before them (SIZE members). Else, as fused
    projections are cut (``q = qkv[..., :n]``, ``k = qkv[..., n:2 * n]``), the bounds must be
    multiples of one width w dividing C, computed from C (``n = C // 3``) or, written as
    literals, multiples of one int attribute equal to w (``n = self.n``; at most 8 pieces): the
    C / w pieces of w channels are coupled, so each keeps the same count.
    """
    if all(type(b) is int for b, _ in inner):
        found = [size_attribute(ctx, node, v) for _, v in inner]
        if all(attr for _, attr in found):
            for (owner, attr), (_, v) in zip(found, inner):
                ctx.sets.record(owner, SIZE, 0, x.ids[:v], attr)
            return ""
    width = math.gcd(x.size, *(v for _, v in inner))
    literal = [v for b, v in inner if type(b) is int]
    owner, attr = size_attribute(ctx, node, width) if literal else ("", "")
    if width == 1 or (literal and (not attr or x.size // width > 8)):
        return owner or f"bounds {[v for _, v in inner]} that no int attribute counts"
    pieces = x.ids.reshape(-1, width)
    piece = Flow(pieces[0].copy(), x.dim)
    problem = next((p for p in (size_follows(ctx, node, b, piece, x) for b, _ in inner
                                if isinstance(b, fx.Node)) if p), "")
    if problem:
        return problem
    for row in pieces[1:]:
        ctx.sets.union(piece.ids, row.copy())
    if attr:
        ctx.sets.record(owner, SIZE, 0, piece.ids, attr)
    return ""


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
