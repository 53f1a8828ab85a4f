"""Coupling rules for attention written out by hand: matmul, softmax, scaled_dot_product_attention.

Attention splits a projection into heads (``graphs.rules.reshape``: the head is the channel), so
q, k and v carry their channels on a *batch* dim of these ops: ``q @ k.T``, ``softmax`` over the
keys and ``attn @ v`` keep each head apart, and ``F.scaled_dot_product_attention`` couples head h
of q, k and v. With grouped-query attention (``enable_gqa``, k and v with fewer heads) query
heads h*g..h*g+g-1 go with key/value head h. A channel on a contracted dim (the head width) or
on the softmax dim is not followed: the op is reported and those channels stay.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> class Heads(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.qkv, self.proj = torch.nn.Linear(8, 24), torch.nn.Linear(8, 8)
    ...     def forward(self, x):  # (batch, tokens, 8): 2 heads of 4
    ...         q, k, v = self.qkv(x).unflatten(-1, (3, -1, 4)).permute(2, 0, 3, 1, 4).unbind(0)
    ...         out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    ...         return self.proj(out.transpose(1, 2).flatten(2))
    >>> heads = next(g for g in trace(Heads(), torch.zeros(1, 5, 8)).prunable if g.channels == 2)
    >>> [m.short() for m in heads.members]
    ['qkv.out x12', 'proj.in x4']
"""

from __future__ import annotations

from torch import fx

from graphs.channels import Flow, Site
from graphs.context import TraceContext, arg, op_name
from graphs.errors import Refused
from graphs.rules.experts import expert_weight, experts_matmul


def _batch_flow(ctx: TraceContext, node: fx.Node, value, out_rank: int, last: int):
    """(output dim, flow) of an operand whose channels are on a batch dim (not the last ``last``
    dims); None when it has no channels; "bad" when they sit on one of the last dims."""
    f, shape = ctx.flow(value), ctx.shape(value)
    if f is None or shape is None:
        return None
    if f.dim >= len(shape) - last:
        return "bad"
    return out_rank - len(shape) + f.dim, f


def _untracked_over(ctx: TraceContext, values, pos: int, out_rank: int) -> bool:
    """Some operand without channels varies along output dim ``pos`` (a per-head mask)."""
    for v in values:
        shape = ctx.shape(v)
        at = pos - (out_rank - len(shape)) if shape is not None else -1
        if shape is not None and ctx.flow(v) is None and 0 <= at < len(shape) and shape[at] > 1:
            return True
    return False


def matmul(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Batched matmul ``a @ b`` with shapes (..., m, k) @ (..., k, n). Channels on a batch dim
    pass (coupled across both operands). Channels on a's rows ``m`` or b's columns ``n`` pass to
    the output's, the other operand carrying none. Channels on the contracted ``k`` of both
    operands are coupled and contracted away (``q @ self.w_g`` with a bare (k, 1) weight):
    exact, since a dead channel adds nothing to the sum."""
    a, b, out = node.args[0], node.args[1], ctx.shape(node)
    shapes = [ctx.shape(v) or () for v in (a, b)]
    experts = expert_weight(ctx, b) if len(shapes[0]) == 3 and out is not None else None
    if experts is not None:  # (E, T, in) @ a module's own (E, in, out): one matrix per expert
        return experts_matmul(ctx, node, experts, a)
    if out is None or len(out) < 2 or any(len(s) < 2 for s in shapes):
        return ctx.reject(node, "matmul", "channels on a matrix dim") if ctx.input_flows(node) \
            else None
    flows = [ctx.flow(v) for v in (a, b)]
    where = [_matrix_dim(f, s, own) for f, s, own in zip(flows, shapes, ((-2, -1), (-1, -2)))]
    if "contracted" in where:
        if where != ["contracted", "contracted"] or flows[0].size != flows[1].size:
            return ctx.reject(node, "matmul", "channels on a contracted dim of one operand only")
        ctx.sets.union(flows[0].ids, flows[1].ids)
        return _site(ctx, node, [a, b], None, flows[0])
    free = [(i, d) for i, d in enumerate(where) if isinstance(d, int)]
    if free:
        (i, d) = free[0]
        if len(free) > 1 or flows[1 - i] is not None:
            return ctx.reject(node, "matmul", "operands carry channels on different dims")
        return _site(ctx, node, [a, b], len(out) + d, flows[i])
    return _couple_batch(ctx, node, [a, b], out, "matmul", last=2)


def _matrix_dim(f: Flow | None, shape: tuple, own: tuple[int, int]):
    """Where channels ``f`` sit on an operand of ``shape``: None (none or a batch dim),
    "contracted", or the output dim they become counted from the end (-2 rows, -1 columns).
    ``own`` is (the operand's free dim, its contracted dim), from the end."""
    if f is None or f.dim < len(shape) - 2:
        return None
    return "contracted" if f.dim - len(shape) == own[1] else own[0]


def _site(ctx: TraceContext, node: fx.Node, values: list, dim: int | None, f: Flow
          ) -> Flow | None:
    """Record the op (operands ``values``) as a site whose MACs scale with channels ``f`` (on
    output dim ``dim``, or contracted away when None) and return the output's flow."""
    shapes = tuple(ctx.shape(v) for v in values if ctx.shape(v) is not None)
    ctx.sets.sites.append(Site(node.name, op_name(node), node.meta.get("module", ""), shapes,
                               dim, f.ids))
    return None if dim is None else Flow(f.ids, dim)


def _couple_batch(ctx, node, values, out, name: str, last: int, gqa: bool = False):
    found = [_batch_flow(ctx, node, v, len(out), last) for v in values]
    if "bad" in found:
        return ctx.reject(node, name, "channels on a contracted, token or feature dim")
    found = [f for f in found if f is not None]
    if not found:
        return None
    pos, first = found[0]
    if any(p != pos for p, _ in found):
        return ctx.reject(node, name, "operands carry channels on different dims")
    for _, f in found[1:]:
        _union_heads(ctx, first, f, gqa)
    if _untracked_over(ctx, values, pos, len(out)):
        ctx.sets.block(first.ids, f"{name} at node {node.name} mixes heads with an untracked "
                                  f"tensor")
    return _site(ctx, node, values, pos, first)


def _union_heads(ctx: TraceContext, q: Flow, kv: Flow, gqa: bool) -> None:
    if q.size == kv.size:
        ctx.sets.union(q.ids, kv.ids)
    elif gqa and q.size % kv.size == 0:
        groups = q.ids.reshape(kv.size, -1)
        for column in groups.T:
            ctx.sets.union(column.copy(), kv.ids)
    else:
        raise Refused(f"{q.size} heads against {kv.size}")


def scaled_dot_product_attention(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Head h of q, k and v (and of the output) is one channel. A mask varying per head must
    carry the heads' channels (a relative position bias table: its head column goes with the
    head); an untracked one blocks them."""
    q, k, v = (arg(node, i, n) for i, n in enumerate(("query", "key", "value")))
    out = ctx.shape(node)
    mask = arg(node, 3, "attn_mask")
    values = [q, k, v] + ([mask] if isinstance(mask, fx.Node) else [])
    features = _feature_flows(ctx, (q, k, v))
    if features is not None:
        return _single_head(ctx, node, features)
    return _couple_batch(ctx, node, values, out, "scaled_dot_product_attention", last=2,
                         gqa=bool(arg(node, 7, "enable_gqa", False)))


def _feature_flows(ctx: TraceContext, qkv: tuple) -> list[Flow] | None:
    """The flows of q, k and v when each carries channels on its last (feature) dim: one head
    as wide as the channels (a VAE's mid-block attention); else None."""
    flows = [ctx.flow(t) for t in qkv]
    shapes = [ctx.shape(t) for t in qkv]
    if any(f is None or s is None or f.dim != len(s) - 1 for f, s in zip(flows, shapes)):
        return None
    return flows


def _single_head(ctx: TraceContext, node: fx.Node, flows: list[Flow]) -> Flow | None:
    """q and k channels meet in q @ k^T (coupled, summed: dead ones add 0), v's pass to the
    output; inexact unless a ``scale`` is given: the default 1/sqrt(E) reads the width."""
    q, k, v = flows
    if q.size != k.size:
        return ctx.reject(node, "scaled_dot_product_attention", "q and k of other widths")
    ctx.sets.union(q.ids, k.ids)
    if arg(node, 6, "scale") is None:
        ctx.sets.approximate(q.ids, f"scaled_dot_product_attention at node {node.name} scales "
                                    f"by 1/sqrt of the q/k width, which pruning changes")
    return Flow(v.ids, len(ctx.shape(node)) - 1)


def softmax(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Softmax over another dim than the channels': the channels pass."""
    x, shape = ctx.flow(node.args[0]), ctx.shape(node.args[0])
    dim = arg(node, 1, "dim")
    if x is None or shape is None:
        return None
    if not isinstance(dim, int) or dim % len(shape) == x.dim:
        return ctx.reject(node, "softmax", "normalises over channels")
    return x
