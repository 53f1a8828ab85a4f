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

import torch
from torch import fx, nn
from torch.nn.modules.conv import _ConvNd

from graphs.channels import Flow
from graphs.context import TraceContext, arg, op_name
from graphs.datamodel import IN, OUT, SIZE
from graphs.rules.experts import expert_slice, record_weight
from graphs.rules.weights import parametrized_weight, standardised_weight

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
        if _caller_holds(ctx, node, attr, ctx.params.get(target)):  # a tied tensor is named
            owner, leaf = node.meta["module"], attr  # after its first holder: the caller's own
        if leaf != attr or not isinstance(ctx.params.get(target), torch.Tensor):
            ctx.reject(node, op_name(node), f"{attr} is not a layer's own {attr!r} tensor")
            return None
        owners.add(owner)
    if len(owners) > 1:
        ctx.reject(node, op_name(node), f"its tensors belong to several modules {sorted(owners)}")
        return None
    owner = owners.pop() if owners else ""
    if owner and not isinstance(ctx.submodule(owner), base):
        kind = type(ctx.submodule(owner)).__name__
        ctx.reject(node, op_name(node), f"called with the tensors of {owner!r} ({kind}), which is "
                                      f"not a {_names(base)}")
        return None
    return owner


def _caller_holds(ctx: TraceContext, node: fx.Node, attr: str, tensor) -> bool:
    """Whether the module whose forward makes this call holds ``tensor`` as its own ``attr``."""
    caller = ctx.submodule(node.meta.get("module", ""))
    return tensor is not None and any(store.get(attr) is tensor
                                      for store in (caller._parameters, caller._buffers))


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
        x = ctx.untracked_input(node, x, per_group * groups)
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
    (``rules.weights.parametrized_weight``); (None, "") after reporting the op."""
    found = parametrized_weight(ctx, weight)
    if found is None:
        return owner_of(ctx, node, base, {"weight": weight, "bias": bias}), ""
    owner, inexact = found
    name = owner_of(ctx, node, base, {"bias": bias})
    if name is None:
        return None, ""
    if name not in ("", owner) or not isinstance(ctx.submodule(owner), base):
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
        x = ctx.untracked_input(node, x, ctx.shape(weight)[0])
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
    site = expert_slice(ctx, weight) or own_matrix(ctx, node, weight, bias)
    if site is not None and shape is not None:
        return _linear_by_name(ctx, node, site, x, bias)
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
    x = x if x is not None and x.dim == len(shape) - 1 else ctx.untracked_input(node, x,
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


def own_matrix(ctx: TraceContext, node: fx.Node, weight, bias) -> tuple[str, str, int, int] | None:
    """(owner, parameter, 0, 1) when ``F.linear`` is called with a 2-d parameter of a module
    that is no ``nn.Linear`` (a MoE router's ``self.weight``), its bias None or the same
    module's; its members then name the parameters."""
    targets = [getattr(t, "target", "") for t in (weight, bias) if t is not None]
    if not all(isinstance(t, fx.Node) and t.op == "get_attr" for t in (weight, bias)
               if t is not None) or len({t.rpartition(".")[0] for t in targets}) != 1:
        return None
    tensor = ctx.params.get(targets[0])
    owner, _, attr = targets[0].rpartition(".")
    if _caller_holds(ctx, node, attr, tensor):  # a tied weight: the caller's own
        owner = node.meta["module"]
    if not isinstance(tensor, nn.Parameter) or tensor.dim() != 2 \
            or isinstance(ctx.submodule(owner), nn.Linear):
        return None
    return owner, attr, 0, 1


def _linear_by_name(ctx: TraceContext, node: fx.Node, site: tuple, x: Flow | None,
                    bias) -> Flow:
    """``F.linear`` on a parameter by name (``expert_slice``, ``own_matrix``)."""
    shape = ctx.shape(node.args[0])
    if x is None or x.dim != len(shape) - 1:
        x = ctx.untracked_input(node, x, shape[-1])
    out = record_weight(ctx, site, x, ctx.shape(node)[-1], len(ctx.shape(node)))
    if bias is not None:
        owner, _, attr = bias.target.rpartition(".") if isinstance(bias, fx.Node) else ("", "",
                                                                                        "")
        if attr and owner == site[0]:
            ctx.sets.record(owner, OUT, 0, out.ids, attr)
        else:
            ctx.sets.block(out.ids, f"the bias of {node.name} is not its weight's module's")
    return out


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


def addmm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """``torch.addmm(self.bias, x, self.weight)``: a linear layer with a (in, out) weight, as
    Hugging Face's GPT-2 ``Conv1D``. Its parameters are members by name (weight dims 0 and 1,
    bias dim 0), since the layer is no torch class the surgeons know; its widths ``nf`` (out)
    and ``nx`` (in), where it has them, are SIZE members."""
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
    module = ctx.submodule(name)
    for attr, ids in (("nf", out), ("nx", x.ids)):  # Conv1D's out and in widths
        if type(getattr(module, attr, None)) is int and getattr(module, attr) == ids.shape[0]:
            ctx.sets.record(name, SIZE, 0, ids, attr)
    return Flow(out, 1)
