"""Coupling rules for norm layers applied to a module's own tensors: batch and instance norm
(per channel, exact), layer and RMS norm over the channel dim (inexact: the statistics change),
group norm (whole groups, exact; one group for all, inexact).

Example:
    >>> import torch
    >>> from graphs import trace
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.GroupNorm(4, 8),
    ...                             torch.nn.Conv2d(8, 2, 1))
    >>> group = trace(model, torch.zeros(1, 3, 2, 2)).prunable[0]
    >>> group.channels, [m.short() for m in group.members]
    (4, ['0.out x2', '1.out x2', '2.in x2'])
"""

from __future__ import annotations

import numpy as np
from torch import fx, nn
from torch.nn.modules.batchnorm import _NormBase

from graphs.channels import Flow
from graphs.context import TraceContext, arg, op_name
from graphs.datamodel import OUT, SIZE
from graphs.rules.layers import owner_of
from graphs.sizes import group_count_follows, norm_shape_follows


def batch_norm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """BatchNorm and InstanceNorm (and their subclasses): per-channel statistics and affine on
    dim 1, exact. A norm with no tensors of its own (``InstanceNorm2d(C)``) keeps its
    ``num_features`` in step with the channels (a SIZE member)."""
    x = ctx.flow(node.args[0])
    tensors = {k: arg(node, i, k) for i, k in
               ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))}
    if x is None and all(t is None or ctx.flow(t) is None for t in tensors.values()):
        return None  # e.g. weight standardisation of a parameter: no channels to follow
    name = owner_of(ctx, node, _NormBase, tensors)
    if name is None:
        return None
    if x is None or x.dim != 1:
        return ctx.reject(node, op_name(node), "channels not on dim 1")
    caller = node.meta.get("module", "")
    module = ctx.submodule(caller)
    if not name and isinstance(module, _NormBase) and module.num_features == x.size:
        ctx.sets.record(caller, SIZE, 0, x.ids, "num_features")
    return _norm_member(ctx, name, x)


def _norm_member(ctx: TraceContext, name: str, x: Flow) -> Flow:
    if name:
        ctx.calls[name] += 1
        ctx.sets.record(name, OUT, 0, x.ids)
    return x


def layer_norm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """LayerNorm over the channel dim only (channels last); pruning changes its statistics."""
    return _last_dim_norm(ctx, node, nn.LayerNorm, {"weight": arg(node, 2, "weight"),
                                                     "bias": arg(node, 3, "bias")})


def rms_norm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """RMSNorm over the channel dim only (channels last)."""
    return _last_dim_norm(ctx, node, nn.RMSNorm, {"weight": arg(node, 2, "weight")})


def _last_dim_norm(ctx: TraceContext, node: fx.Node, base: type, tensors: dict) -> Flow | None:
    x, shape = ctx.flow(node.args[0]), ctx.shape(node.args[0])
    if x is None or shape is None:
        return None
    if len(arg(node, 1, "normalized_shape", ())) != 1 or x.dim != len(shape) - 1:
        return ctx.reject(node, op_name(node), "normalises more than the channel dimension")
    name = owner_of(ctx, node, base, tensors)
    if name is None:
        return None
    ctx.sets.approximate(x.ids, f"{op_name(node)} over the channels at node {node.name}")
    if not name:  # no weights (elementwise_affine=False): normalized_shape must follow alone
        norm_shape_follows(ctx, node, tuple(arg(node, 1, "normalized_shape")), x)
    return _norm_member(ctx, name, x)


def group_norm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """GroupNorm: with 1 < G < C groups a group's channels are one channel here (whole groups
    go, exact: every other group keeps its statistics); one group per channel is per-channel;
    one group for all (G = 1) prunes single channels, inexactly (its statistics change)."""
    x = ctx.flow(node.args[0])
    if x is None:
        return None
    name = owner_of(ctx, node, nn.GroupNorm, {"weight": arg(node, 2, "weight"),
                                              "bias": arg(node, 3, "bias")})
    if name is None:
        return None
    if x.dim != 1:
        return ctx.reject(node, "group_norm", "channels not on dim 1")
    groups = arg(node, 1, "num_groups")
    if not isinstance(groups, int) or groups < 1 or x.size % groups:
        return ctx.reject(node, "group_norm", f"{groups} groups over {x.size} channels")
    if groups == 1:
        ctx.sets.approximate(x.ids, f"group_norm over the channels at node {node.name}")
    elif groups < x.size:
        per = x.ids.reshape(groups, -1)
        ctx.sets.union(np.repeat(per[:, :1], per.shape[1], axis=1).reshape(-1), x.ids)
    if not name:  # no weights (affine=False): its sizes must follow alone
        group_count_follows(ctx, node, groups, x)
    return _norm_member(ctx, name, x)
