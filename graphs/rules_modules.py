"""Coupling rules for leaf modules: layers with weights, norms, and channel-wise passthroughs."""

from __future__ import annotations

from torch import fx, nn

from graphs.channels import Flow
from graphs.context import TraceContext
from graphs.model import IN, OUT

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
PASSTHROUGH = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
    nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d,
    nn.ReplicationPad2d,
)


def _input(ctx: TraceContext, node: fx.Node) -> Flow | None:
    return ctx.flow(node.args[0]) if node.args else None


def conv(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Conv: consumes input channels (weight dim 1), produces new ones (dim 0); depthwise passes."""
    m, x, name = ctx.module(node), _input(ctx, node), str(node.target)
    if x is None or x.dim != 1:
        return ctx.reject(node, type(m).__name__, "input channels not on dim 1")
    ctx.calls[name] += 1
    if m.groups == 1:
        ctx.sets.record(name, IN, 1, x.ids)
        out = ctx.sets.fresh(m.out_channels)
        ctx.sets.record(name, OUT, 0, out)
        return Flow(out, 1)
    if m.groups == m.in_channels == m.out_channels:
        ctx.sets.record(name, OUT, 0, x.ids)  # depthwise: channel c in -> channel c out
        return x
    return grouped_conv(ctx, name, m.groups, x.ids, m.out_channels)


def grouped_conv(ctx: TraceContext, name: str, groups: int, ids, out_channels: int) -> Flow:
    """groups > 1: position i of every group is one channel, so every group loses the same ones.

    The weight is (out, in/groups, ...): weight dim 1 position i reads input channel i of each
    group, and output channel j of each group is coupled across groups, so the rebuilt layer keeps
    ``groups`` groups of equal width.
    """
    per_group = ids.reshape(groups, -1)
    for row in per_group[1:]:
        ctx.sets.union(per_group[0], row)
    ctx.sets.record(name, IN, 1, per_group[0])
    out = ctx.sets.fresh(out_channels)
    ctx.sets.record(name, OUT, 0, out)
    out_groups = out.reshape(groups, -1)
    for row in out_groups[1:]:
        ctx.sets.union(out_groups[0], row)
    return Flow(out, 1)


def conv_transpose(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """ConvTranspose: weight is (in, out/groups, ...), so input channels sit on dim 0."""
    m, x, name = ctx.module(node), _input(ctx, node), str(node.target)
    if x is None or x.dim != 1 or m.groups != 1:
        return ctx.reject(node, type(m).__name__, "grouped or input channels not on dim 1")
    ctx.calls[name] += 1
    ctx.sets.record(name, IN, 0, x.ids)
    out = ctx.sets.fresh(m.out_channels)
    ctx.sets.record(name, OUT, 1, out)
    return Flow(out, 1)


def linear(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Linear: features on the last dim; after a flatten one channel is several features."""
    m, x, name = ctx.module(node), _input(ctx, node), str(node.target)
    shape = ctx.shape(node.args[0])
    if x is None or shape is None or x.dim != len(shape) - 1:
        return ctx.reject(node, "Linear", "input features are not the tracked dimension")
    ctx.calls[name] += 1
    ctx.sets.record(name, IN, 1, x.ids)
    out = ctx.sets.fresh(m.out_features)
    ctx.sets.record(name, OUT, 0, out)
    return Flow(out, len(shape) - 1)


def batch_norm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    m, x, name = ctx.module(node), _input(ctx, node), str(node.target)
    if x is None or x.dim != 1:
        return ctx.reject(node, type(m).__name__, "channels not on dim 1")
    ctx.calls[name] += 1
    if m.affine or m.track_running_stats:
        ctx.sets.record(name, OUT, 0, x.ids)
    return x


def layer_norm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """LayerNorm over the channel dim only (channels last); pruning changes its statistics."""
    m, x, name = ctx.module(node), _input(ctx, node), str(node.target)
    shape = ctx.shape(node.args[0])
    if x is None or shape is None or len(m.normalized_shape) != 1 or x.dim != len(shape) - 1:
        return ctx.reject(node, "LayerNorm", "normalises more than the channel dimension")
    ctx.calls[name] += 1
    if m.elementwise_affine:
        ctx.sets.record(name, OUT, 0, x.ids)
    return x


def group_norm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    m, x, name = ctx.module(node), _input(ctx, node), str(node.target)
    if x is None or x.dim != 1:
        return ctx.reject(node, "GroupNorm", "channels not on dim 1")
    ctx.calls[name] += 1
    if m.num_groups not in (1, m.num_channels):
        ctx.sets.block(x.ids, f"GroupNorm {name} with {m.num_groups} groups is not pruned")
    if m.affine:
        ctx.sets.record(name, OUT, 0, x.ids)
    return x


def passthrough_module(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Element-wise or spatial-only modules: the channel layout passes through unchanged."""
    x = _input(ctx, node)
    if x is None:
        return None
    shape_in, shape_out = ctx.shape(node.args[0]), ctx.shape(node)
    if shape_out is None or shape_in is None or len(shape_in) != len(shape_out) \
            or shape_out[x.dim] != x.size:
        return ctx.reject(node, type(ctx.module(node)).__name__, "changes the channel dimension")
    return x


def softmax_module(ctx: TraceContext, node: fx.Node) -> Flow | None:
    x, m = _input(ctx, node), ctx.module(node)
    shape = ctx.shape(node)
    if x is not None and shape is not None and m.dim is not None and m.dim % len(shape) == x.dim:
        return ctx.reject(node, type(m).__name__, "normalises over channels")
    return x


def register_all(table) -> None:
    table.register(CONVS, conv)
    table.register(CONV_TRANSPOSES, conv_transpose)
    table.register(nn.Linear, linear)
    table.register(BATCH_NORMS, batch_norm)
    table.register(nn.LayerNorm, layer_norm)
    table.register(nn.GroupNorm, group_norm)
    table.register(PASSTHROUGH, passthrough_module)
    table.register((nn.Softmax, nn.LogSoftmax), softmax_module)
