"""Coupling rules for tensor functions and methods: element-wise maths and channel-wise ops."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx
from torchvision.ops import stochastic_depth

from graphs.channels import Flow
from graphs.context import TraceContext, op_name
from graphs.rules.table import method
from graphs.sizes import mark_scale

BINARY = [operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
          operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
          torch.maximum, torch.minimum, torch.where]
BINARY += [torch.eq, torch.ne, torch.gt, torch.lt, torch.ge, torch.le, torch.logical_and,
           torch.logical_or]
BINARY_METHODS = method("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "__radd__",
                        "__rsub__", "__rmul__", "__truediv__", "__rtruediv__", "__eq__",
                        "__ne__", "__gt__", "__lt__", "__ge__", "__le__", "__and__", "__or__",
                        "eq", "ne", "gt", "lt", "ge", "le")
_UNARY = [torch.relu, torch.relu_, F.relu, F.relu6, F.leaky_relu, F.silu, F.gelu, F.hardswish,
         F.hardsigmoid, F.hardtanh, F.elu, F.mish, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh,
         F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.clamp, torch.abs, torch.neg,
         torch.exp, operator.neg, torch.square, torch.sqrt, torch.rsqrt,
         F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
         torch.max_pool1d, torch.max_pool2d, torch.max_pool3d, torch.avg_pool1d,
         F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
         F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
         torch.adaptive_avg_pool1d, F.interpolate, F.pad, torch.pow, torch.erf, torch.cos,
         torch.sin, F.softplus, F.celu, F.selu, torch.log,
         stochastic_depth]  # drops whole samples (or the whole batch): channel-agnostic
UNARY = list(dict.fromkeys(_UNARY))  # some F.* are the very same builtins as torch.*
UNARY_METHODS = method("__abs__", "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clamp", "clamp_",
                       "contiguous", "clone", "float", "half", "to", "type_as", "abs", "neg",
                       "exp", "sqrt", "rsqrt", "pow", "square", "detach", "__neg__",
                       "__pow__", "erf", "tanh_", "neg_", "sin", "cos",
                       "type", "double", "bfloat16", "masked_fill")
_READS_DTYPE_ONLY = {"type_as", "to"}  # x.type_as(other), x.to(other): other's dtype, not values
LIKE = [torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like,
        torch.randn_like]
REDUCTIONS = [torch.mean, torch.sum, torch.amax, torch.amin]
REDUCTION_METHODS = method("mean", "sum", "amax", "amin")


def unary(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """First argument's channels pass through; anything else must not change the channel dim."""
    x = ctx.flow(node.args[0]) if node.args else None
    shape_in, shape_out = ctx.shape(node.args[0]) if node.args else None, ctx.shape(node)
    if x is None or shape_out is None:
        return None
    if shape_in is None or len(shape_in) != len(shape_out) or shape_out[x.dim] != x.size:
        return ctx.reject(node, op_name(node), "changes the channel dimension")
    if x.size > 1 and op_name(node) not in _READS_DTYPE_ONLY \
            and any(_broadcasts_over(ctx, a, x, shape_out) for a in node.args[1:]):
        return ctx.reject(node, op_name(node), "second operand varies over channels")
    return x


def _broadcasts_over(ctx: TraceContext, arg, x: Flow, shape_out) -> bool:
    """True when tensor ``arg`` has a non-1 size on x's channel position (e.g. pow by a tensor)."""
    shape = ctx.shape(arg)
    if shape is None:
        return False
    pos = x.dim - (len(shape_out) - len(shape))
    return 0 <= pos < len(shape) and shape[pos] != 1


def elementwise(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Broadcasting binary ops: operands aligned on the channel position are coupled (add, SE mul).

    A size among the operands (``x / C``) read from a channel count makes those channels
    inexact (``graphs.rules.scales``)."""
    mark_scale(ctx, node, (node.args, node.kwargs))
    out_shape = ctx.shape(node)
    if out_shape is None:
        return None
    tensors = [a for a in list(node.args) + list(node.kwargs.values()) if ctx.shape(a) is not None]
    aligned = []  # (flow, output position of its channel dim)
    for a in tensors:
        f = ctx.flow(a)
        if f is not None:
            aligned.append((f, len(out_shape) - len(ctx.shape(a)) + f.dim))
    full = {pos for f, pos in aligned if f.size == out_shape[pos] and f.size > 1}
    if not full:
        return next((Flow(f.ids, pos) for f, pos in aligned if f.size == out_shape[pos]), None)
    if len(full) > 1:
        return ctx.reject(node, op_name(node), "operands carry channels on different dims")
    pos = full.pop()
    keep = [f for f, p in aligned if p == pos and f.size == out_shape[pos]]
    for f in keep[1:]:
        ctx.sets.union(keep[0].ids, f.ids)
    for a in tensors:
        f, shape = ctx.flow(a), ctx.shape(a)
        at = pos - (len(out_shape) - len(shape))
        tracked_here = f is not None and f.dim == at
        if 0 <= at < len(shape) and shape[at] > 1 and not tracked_here:
            ctx.sets.block(keep[0].ids, f"{op_name(node)} at node {node.name} mixes channels with "
                                        f"an untracked tensor {a.name}")
    return Flow(keep[0].ids, pos)


def reduction(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """mean/sum over non-channel dims keep the channels; reducing the channel dim is unsupported."""
    x, shape_in = ctx.flow(node.args[0]), ctx.shape(node.args[0])
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    if x is None or shape_in is None:
        return None
    if dims is None:
        return ctx.reject(node, op_name(node), "reduces over every dim")
    dims = [d % len(shape_in) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
    if x.dim in dims:
        return _over_channels(ctx, node, x, keepdim)
    return Flow(x.ids, x.dim if keepdim else x.dim - sum(d < x.dim for d in dims))


def _over_channels(ctx: TraceContext, node: fx.Node, x: Flow, keepdim: bool) -> None:
    """A statistic over the channels (the mean of an RMSNorm): no channels left. A sum is exact
    (dead channels add 0); a mean or max is not (the count or the max changes)."""
    if not keepdim:
        return ctx.reject(node, op_name(node), "reduces the channel dim away")
    if op_name(node) != "sum":
        ctx.sets.approximate(x.ids, f"{op_name(node)} over the channels at node {node.name}")
    return None


def normalize(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """``F.normalize``: each vector along ``dim`` divided by its p-norm. The channels pass, also
    when ``dim`` is theirs: a dead (zero) channel adds nothing to a p-norm, so removing it is
    exact (unlike a mean over the channels)."""
    x, before, after = ctx.flow(node.args[0]), ctx.shape(node.args[0]), ctx.shape(node)
    if x is None or before != after:
        return None if x is None else ctx.reject(node, "normalize", "changes the shape")
    return x


def like(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """zeros_like/new_zeros and friends: a tensor of x's shape keeps x's layout; of another
    shape it carries no channels."""
    x, before, after = ctx.flow(node.args[0]), ctx.shape(node.args[0]), ctx.shape(node)
    return x if x is not None and before == after else None


def roll(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """torch.roll along other dims than the channels' keeps them."""
    x, shape = ctx.flow(node.args[0]), ctx.shape(node.args[0])
    dims = node.args[2] if len(node.args) > 2 else node.kwargs.get("dims")
    if x is None or shape is None:
        return None
    dims = [d % len(shape) for d in (dims if isinstance(dims, (list, tuple)) else [dims])] \
        if dims is not None else list(range(len(shape)))
    return ctx.reject(node, "roll", "rolls the channels") if x.dim in dims else x
