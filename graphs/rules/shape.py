"""Coupling rules for ops that move channels around: flatten, reshape, permute, cat, split, index."""

from __future__ import annotations

import numpy as np
from torch import fx

from graphs.channels import Flow
from graphs.context import TraceContext, arg, op_name
from graphs.datamodel import SIZE
from graphs.rules.params import buffer_pieces
from graphs.sizes import block_reads, size_attribute, size_follows
from graphs.sources import at_source


def flatten_ids(x: Flow, shape: tuple[int, ...], start: int, end: int) -> Flow:
    """Flow after merging dims start..end: each channel becomes the run of features it covers.

    Example:
        >>> flatten_ids(Flow(np.array([7, 9]), 1), (1, 2, 3), 1, 2).ids.tolist()
        [7, 7, 7, 9, 9, 9]
    """
    if x.dim < start:
        return x
    if x.dim > end:
        return Flow(x.ids, x.dim - (end - start))
    block = [1] * (end - start + 1)
    block[x.dim - start] = x.size
    grid = np.broadcast_to(x.ids.reshape(block), shape[start:end + 1])
    return Flow(np.ascontiguousarray(grid).reshape(-1), start)


def _flatten(ctx: TraceContext, node: fx.Node, start: int, end: int) -> Flow | None:
    x, shape = ctx.flow(node.args[0]), ctx.shape(node.args[0])
    if x is None or shape is None:
        return None
    nd = len(shape)
    return flatten_ids(x, shape, start % nd if nd else 0, end % nd if nd else 0)


def flatten_function(ctx: TraceContext, node: fx.Node) -> Flow | None:
    return _flatten(ctx, node, arg(node, 1, "start_dim", 0), arg(node, 2, "end_dim", -1))


def permute(ctx: TraceContext, node: fx.Node) -> Flow | None:
    x = ctx.flow(node.args[0])
    if x is None:
        return None
    dims = node.args[1:] if len(node.args) > 2 else arg(node, 1, "dims", None)
    nd = len(ctx.shape(node))
    order = [d % nd for d in dims]
    return Flow(x.ids, order.index(x.dim))


def transpose(ctx: TraceContext, node: fx.Node) -> Flow | None:
    x, shape = ctx.flow(node.args[0]), ctx.shape(node)
    if x is None or shape is None:
        return None
    a, b = (arg(node, 1, "dim0", 0) % len(shape), arg(node, 2, "dim1", 1) % len(shape))
    return Flow(x.ids, b if x.dim == a else a if x.dim == b else x.dim)


def cat(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Concatenation along the channel dim stacks the layouts; along another dim couples them.

    A module's own float buffer among tracked pieces along their channel dim (a zero k bias
    between q and v biases) brings its own channels, which surgery slices (``buffer_pieces``)."""
    parts, shape = arg(node, 0, "tensors", []), ctx.shape(node)
    flows = [ctx.flow(p) for p in parts]
    if shape is None:
        return None
    dim = arg(node, 1, "dim", 0) % len(shape)
    if all(f is None for f in flows):  # no operand carries channels
        return None
    missing = [p for f, p in zip(flows, parts) if f is None]
    if missing and all(f is None or f.dim == dim for f in flows):
        pieces = iter(buffer_pieces(ctx, missing, dim) or [None] * len(missing))
        flows = [f if f is not None else next(pieces) for f in flows]
    if any(f is None for f in flows) or len({f.dim for f in flows}) != 1:
        return ctx.reject(node, "cat", "an operand has no traced channels")
    if flows[0].dim == dim:
        return Flow(np.concatenate([f.ids for f in flows]), dim)
    for f in flows[1:]:
        ctx.sets.union(flows[0].ids, f.ids)
    return flows[0]


def stack(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """``torch.stack`` along a new dim: position i of every operand shares one channel slot, so
    the operands' channels are coupled (as ``cat`` along another dim than the channels')."""
    parts, shape = arg(node, 0, "tensors", []), ctx.shape(node)
    flows = [ctx.flow(p) for p in parts]
    if shape is None or all(f is None for f in flows):
        return None
    if any(f is None for f in flows) or len({f.dim for f in flows}) != 1:
        return ctx.reject(node, "stack", "an operand has no traced channels on the same dim")
    dim = arg(node, 1, "dim", 0) % len(shape)
    for f in flows[1:]:
        ctx.sets.union(flows[0].ids, f.ids)
    return Flow(flows[0].ids, flows[0].dim + (dim <= flows[0].dim))


def split(ctx: TraceContext, node: fx.Node) -> tuple | None:
    """split/chunk/tensor_split: along the channel dim each output takes its slice of channels.

    ``chunk(n)`` (or ``tensor_split(n)``) of C channels with C % n == 0 couples position i of every
    piece, so every piece loses the same channels and the pruned tensor still splits into the
    right pieces; so do equal sizes that follow pruning (``x.split(C // 2)``, YOLO's
    ``x.split((self.c, self.c), 1)``: ``self.c`` a SIZE member). Split sizes equal to one tuple
    attribute of the module (``torch.split(x, self.split_indexes)``), or each to an int
    attribute of its own (``torch.split(x, [self.a, self.b])``), leave each piece to prune on
    its own: the attribute (element) of piece i is a SIZE member of it. Other literal sizes or
    indices block the channels (with the source line): they would not fit once pruned.
    """
    x, metas = ctx.flow(node.args[0]), node.meta.get("tensor_meta")
    if x is None or not isinstance(metas, (tuple, list)) or hasattr(metas, "shape"):
        return None
    dim = arg(node, 2, "dim", 0) % len(ctx.shape(node.args[0]))
    if dim != x.dim:
        return tuple(x for _ in metas)
    sizes = [m.shape[dim] for m in metas]
    bounds = np.cumsum([0] + sizes)
    pieces = tuple(Flow(x.ids[bounds[i]:bounds[i + 1]], dim) for i in range(len(sizes)))
    by_count = op_name(node) in ("chunk", "tensor_split") \
        and isinstance(arg(node, 1, "chunks", None), int) \
        and len(sizes) == arg(node, 1, "chunks", None)
    equal = len(set(sizes)) == 1
    if equal and by_count:
        _couple(ctx, pieces)
    elif _sizes_attribute(ctx, node, pieces, whole=True):
        pass  # element i of a tuple attribute counts what piece i keeps
    elif equal and _equal_pieces_follow(ctx, node, pieces[0]):
        _couple(ctx, pieces)
    elif _sizes_attribute(ctx, node, pieces, whole=False):
        pass  # an int attribute per piece counts what it keeps
    elif x.size > 1:
        _block_split(ctx, node, x, sizes)
    return pieces


def _couple(ctx: TraceContext, pieces: tuple[Flow, ...]) -> None:
    for piece in pieces[1:]:
        ctx.sets.union(pieces[0].ids, piece.ids)


def _block_split(ctx: TraceContext, node: fx.Node, x: Flow, sizes: list[int]) -> None:
    """Block the channels split into sizes that do not follow, and those a size was read from."""
    line = f"{op_name(node)} at node {node.name} splits channels into fixed sizes " \
           f"{sizes}{at_source(node)}"
    ctx.sets.block(x.ids, line)
    written = arg(node, 1, "split_size_or_sections", arg(node, 1, "split_size", None))
    for size in written if isinstance(written, (list, tuple)) else [written]:
        block_reads(ctx, size, line + " read from these channels")


def _equal_pieces_follow(ctx: TraceContext, node: fx.Node, piece: Flow) -> bool:
    """``x.split(size)`` (or ``x.split((size, size))``) into equal pieces, with a ``size`` that
    follows pruning: read from the channel count, or ``self.c`` (then a SIZE member, set to the
    kept piece width)."""
    written = arg(node, 1, "split_size_or_sections", arg(node, 1, "split_size", None))
    x = ctx.flow(node.args[0])
    sizes = list(written) if isinstance(written, (list, tuple)) else [written]
    if None in sizes:
        return False
    distinct = {id(v) if isinstance(v, fx.Node) else v: v for v in sizes}.values()
    return not any(size_follows(ctx, node, v, piece, x) for v in distinct)


def _sizes_attribute(ctx: TraceContext, node: fx.Node, pieces: tuple[Flow, ...],
                     whole: bool) -> bool:
    """``whole``: ``torch.split(x, self.split_indexes)``, the literal sizes equal one tuple
    attribute of the module, so piece i is counted by its element i (a SIZE member with dim i).
    Else ``torch.split(x, [self.a, self.b])``: each size equals one int attribute, which counts
    its piece (a SIZE member with dim 0)."""
    sizes = arg(node, 1, "split_size_or_sections", arg(node, 1, "split_size", None))
    if op_name(node) != "split" or not isinstance(sizes, (list, tuple)) \
            or not all(type(v) is int for v in sizes):
        return False
    if whole:
        owner, attr = size_attribute(ctx, node, tuple(sizes))
        for i, piece in enumerate(pieces if attr else ()):
            ctx.sets.record(owner, SIZE, i, piece.ids, attr)
        return bool(attr)
    found = [size_attribute(ctx, node, v) for v in sizes]  # [self.a, self.b]: one each
    if not all(a for _, a in found) or len(set(found)) != len(found):
        return False
    for (owner, attr), piece in zip(found, pieces):
        ctx.sets.record(owner, SIZE, 0, piece.ids, attr)
    return True


def unsqueeze(ctx: TraceContext, node: fx.Node) -> Flow | None:
    x, shape = ctx.flow(node.args[0]), ctx.shape(node)
    if x is None or shape is None:
        return None
    d = arg(node, 1, "dim", 0) % len(shape)
    return Flow(x.ids, x.dim + 1 if d <= x.dim else x.dim)


def expand(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """expand/expand_as/broadcast_to: size-1 dims grow, the channel dim must keep its size."""
    x, before, after = ctx.flow(node.args[0]), ctx.shape(node.args[0]), ctx.shape(node)
    if x is None or before is None or after is None:
        return None
    dim = x.dim + len(after) - len(before)
    if after[dim] != x.size:
        return ctx.reject(node, str(node.target), "repeats one channel")
    return Flow(x.ids, dim)


def unbind(ctx: TraceContext, node: fx.Node) -> tuple | None:
    """unbind along another dim than the channels': every piece keeps them."""
    x, metas = ctx.flow(node.args[0]), node.meta.get("tensor_meta")
    if x is None or not isinstance(metas, (tuple, list)):
        return None
    dim = arg(node, 1, "dim", 0) % len(ctx.shape(node.args[0]))
    if dim == x.dim:
        ctx.sets.block(x.ids, f"unbind at node {node.name} takes channels apart{at_source(node)}")
        return None
    return tuple(Flow(x.ids, x.dim - (dim < x.dim)) for _ in metas)
