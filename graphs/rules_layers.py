"""Coupling rules for layer functions applied to a module's own parameters.

The capture records what a layer *does*: ``F.conv2d(x, self.weight, self.bias, ...)``,
``F.batch_norm(x, self.running_mean, ..., self.weight, self.bias)``, ``F.linear``,
``F.layer_norm``, ``F.group_norm``, ``F.rms_norm``, ``F.embedding``. Each rule finds the module
that owns the parameters (their qualified names) and records the channels on it, whatever the
module's class: timm's ``BatchNormAct2d`` (a BatchNorm2d subclass calling ``F.batch_norm``),
``Conv2dSame``, ultralytics' ``Conv`` are all seen as the functions they call. The owner must
be a subclass of the torch layer that normally calls the function (``_ConvNd``, ``nn.Linear``,
``_NormBase``, ...), so that surgery knows how to rebuild it; weights from anywhere else are
reported as unsupported.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> class Norm(torch.nn.BatchNorm2d):  # a subclass with its own forward, as timm's
    ...     def forward(self, x):
    ...         return torch.relu(super().forward(x))
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), Norm(4), torch.nn.Conv2d(4, 2, 1))
    >>> [m.short() for m in trace(model, torch.zeros(1, 3, 2, 2)).prunable[0].members]
    ['0.out', '1.out', '2.in']
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

from graphs.channels import Flow
from graphs.context import TraceContext, arg, op_name
from graphs.datamodel import IN, OUT, SIZE
from graphs.rules_weights import parametrized_weight, standardised_weight
from graphs.sizes import group_count_follows, norm_shape_follows

CONVS = [torch.conv1d, torch.conv2d, torch.conv3d]
CONV_TRANSPOSES = [torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d]


def owner_of(ctx: TraceContext, node: fx.Node, base: type | tuple, tensors: dict) -> str | None:
    """The module whose attributes ``tensors`` ({attribute: graph arg}) are, if it is a ``base``.

    Returns None (after reporting the op) when a tensor is not that module's own parameter or
    buffer of that name, or the module is not a ``base``; "" when every tensor is None.
    """
    owners = set()
    for attr, value in tensors.items():
        if value is None:
            continue
        target = value.target if isinstance(value, fx.Node) and value.op == "get_attr" else ""
        owner, _, leaf = target.rpartition(".")
        if leaf != attr or not isinstance(ctx.params.get(target), torch.Tensor):
            ctx.reject(node, op_name(node), f"{attr} is not a layer's own {attr!r} tensor")
            return None
        owners.add(owner)
    if len(owners) > 1:
        ctx.reject(node, op_name(node), f"its tensors belong to several modules {sorted(owners)}")
        return None
    owner = owners.pop() if owners else ""
    if owner and not isinstance(ctx.root.get_submodule(owner), base):
        kind = type(ctx.root.get_submodule(owner)).__name__
        ctx.reject(node, op_name(node), f"called with the tensors of {owner!r} ({kind}), which is "
                                      f"not a {_names(base)}")
        return None
    return owner


def _names(base: type | tuple) -> str:
    return " or ".join(b.__name__ for b in (base if isinstance(base, tuple) else (base,)))


def conv(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Conv: consumes input channels (weight dim 1), produces new ones (dim 0); depthwise passes."""
    x, weight = ctx.flow(node.args[0]), arg(node, 1, "weight")
    standardised = standardised_weight(ctx, weight)
    weight = standardised if standardised is not None else weight
    name, inexact = weight_owner(ctx, node, _ConvNd, weight, arg(node, 2, "bias"))
    if name is None:
        return None
    if not name:
        return ctx.reject(node, op_name(node), "no weight")
    groups, (out_ch, per_group) = arg(node, 6, "groups", 1), ctx.shape(weight)[:2]
    if x is None or x.dim != 1:
        x = untracked_input(ctx, node, x, per_group * groups)
    ctx.calls[name] += 1
    if inexact:
        ctx.sets.approximate(x.ids, inexact)
    if standardised is not None and not groups == x.size == out_ch:
        ctx.sets.approximate(x.ids, f"{name} standardises its filters over their input "
                                    f"channels (weight standardisation)")
    if groups == 1:
        ctx.sets.record(name, IN, 1, x.ids)
        out = ctx.sets.fresh(out_ch)
        ctx.sets.record(name, OUT, 0, out)
        if inexact:
            ctx.sets.approximate(out, inexact)
        return Flow(out, 1)
    if groups == x.size == out_ch:
        ctx.sets.record(name, OUT, 0, x.ids)  # depthwise: channel c in -> channel c out
        return x
    out = grouped_conv(ctx, name, groups, x.ids, out_ch)
    if inexact:
        ctx.sets.approximate(out.ids, inexact)
    return out


def weight_owner(ctx: TraceContext, node: fx.Node, base: type, weight, bias) -> tuple:
    """(owner, why pruning it is inexact or "") of a layer call's weight and bias: the owner of
    both tensors (``owner_of``), or of a weight computed by a parametrization
    (``rules_weights.parametrized_weight``); (None, "") after reporting the op."""
    found = parametrized_weight(ctx, weight)
    if found is None:
        return owner_of(ctx, node, base, {"weight": weight, "bias": bias}), ""
    owner, inexact = found
    name = owner_of(ctx, node, base, {"bias": bias})
    if name is None:
        return None, ""
    if name not in ("", owner) or not isinstance(ctx.root.get_submodule(owner), base):
        ctx.reject(node, op_name(node), f"a parametrized weight of {owner!r} with the bias of "
                                        f"{name!r}, or not a {_names(base)}")
        return None, ""
    return owner, inexact


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
    x, weight = ctx.flow(node.args[0]), arg(node, 1, "weight")
    name = owner_of(ctx, node, _ConvNd, {"weight": weight, "bias": arg(node, 2, "bias")})
    if name is None:
        return None
    if not name or arg(node, 6, "groups", 1) != 1:
        return ctx.reject(node, op_name(node), "grouped")
    if x is None or x.dim != 1:
        x = untracked_input(ctx, node, x, ctx.shape(weight)[0])
    ctx.calls[name] += 1
    ctx.sets.record(name, IN, 0, x.ids)
    out = ctx.sets.fresh(ctx.shape(weight)[1])
    ctx.sets.record(name, OUT, 1, out)
    return Flow(out, 1)


def linear(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Linear: features on the last dim; after a flatten one channel is several features.

    A bias computed in ``forward()`` whose channels are traced (BEiT's ``F.linear(x,
    self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))``) is coupled with the
    output features: its pieces are pruned with the rows they are added to."""
    x, weight, shape = ctx.flow(node.args[0]), arg(node, 1, "weight"), ctx.shape(node.args[0])
    bias = arg(node, 2, "bias")
    traced_bias = ctx.flow(bias)
    name, inexact = weight_owner(ctx, node, nn.Linear, weight,
                                 None if traced_bias is not None else bias)
    if name is None:
        return None
    if not name or shape is None:
        return ctx.reject(node, "linear", "no weight")
    out_features = ctx.shape(weight)[0]
    if traced_bias is not None and (traced_bias.dim != len(ctx.shape(bias)) - 1
                                    or traced_bias.size != out_features):
        return ctx.reject(node, "linear", "the bias carries channels off its feature dim")
    x = x if x is not None and x.dim == len(shape) - 1 else untracked_input(ctx, node, x,
                                                                            shape[-1])
    ctx.calls[name] += 1
    ctx.sets.record(name, IN, 1, x.ids)
    out = ctx.sets.fresh(out_features)
    ctx.sets.record(name, OUT, 0, out)
    for ids in (x.ids, out) if inexact else ():
        ctx.sets.approximate(ids, inexact)
    if traced_bias is not None:
        ctx.sets.union(out, traced_bias.ids)
    return Flow(out, len(shape) - 1)


def untracked_input(ctx: TraceContext, node: fx.Node, x: Flow | None, size: int) -> Flow:
    """Fresh, blocked input channels for a layer whose input features are not the tracked dim
    (e.g. a model input laid out channels-last); the channels it had stay too."""
    reason = f"the input of {node.name} carries no traced channels" if x is None else \
        f"the input features of {node.name} are not the tracked dimension"
    if x is not None:
        ctx.sets.block(x.ids, reason)
    fresh = ctx.sets.fresh(size)
    ctx.sets.block(fresh, reason)
    return Flow(fresh, 0)


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
    module = ctx.root.get_submodule(caller)
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


def embedding(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """An embedding table produces its rows' features on the last dim (weight dim 1)."""
    weight = arg(node, 1, "weight")
    name = owner_of(ctx, node, nn.Embedding, {"weight": weight})
    if not name:
        return None
    ctx.calls[name] += 1
    out = ctx.sets.fresh(ctx.shape(weight)[1])
    ctx.sets.record(name, OUT, 1, out)
    return Flow(out, len(ctx.shape(node)) - 1)


def register_all(table) -> None:
    """The op rules of layers that are no kind of ``graphs.kinds`` (the kinds' own functions
    are registered from that table)."""
    table.register(torch.addmm, addmm)


def addmm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """``torch.addmm(self.bias, x, self.weight)``: a linear layer with a (in, out) weight, as
    Hugging Face's GPT-2 ``Conv1D``. Its parameters are members by name (weight dims 0 and 1,
    bias dim 0), since the layer is no torch class the surgeons know."""
    bias, x_node, weight = (arg(node, i, n) for i, n in enumerate(("input", "mat1", "mat2")))
    x, targets = ctx.flow(x_node), [getattr(t, "target", "") for t in (weight, bias)]
    owners = {t.rpartition(".")[0] for t in targets}
    if x is None or x.dim != 1 or len(owners) != 1 or not all(
            isinstance(ctx.params.get(t), nn.Parameter) for t in targets) \
            or [t.rpartition(".")[2] for t in targets] != ["weight", "bias"]:
        return ctx.reject(node, "addmm", "not a layer's own (in, out) weight and bias")
    (name,) = owners
    ctx.calls[name] += 1
    ctx.sets.record(name, IN, 0, x.ids, "weight")
    out = ctx.sets.fresh(ctx.shape(weight)[1])
    ctx.sets.record(name, OUT, 1, out, "weight")
    ctx.sets.record(name, OUT, 0, out, "bias")
    return Flow(out, 1)
