"""Conv weights computed in forward() from the layer's own parameter: weight standardisation.

timm's ``StdConv2d`` and ``ScaledStdConv2d`` (NFNet, BiT) standardise each output filter over its
fan-in before the conv::

    weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                          weight=(self.gain * self.scale).view(-1), training=True,
                          momentum=0., eps=self.eps).reshape_as(self.weight)
    return F.conv2d(x, weight, self.bias, ...)

``standardised_weight`` recognises exactly this pattern (the batch statistics are per output
channel; the optional affine weight is made only from the layer's own per-output-channel
parameters and numbers) and returns the ``get_attr`` node of ``self.weight``, so the conv rule
records the layer as an ordinary conv. Output channels prune exactly (each filter is
standardised on its own; ``gain`` is cut with them). Input channels prune *inexactly*: the
mean and variance of every filter change when its fan-in loses columns, so the conv rule marks
them approximate, except for a depthwise conv (fan-in within one channel). Any other computed
weight is not recognised, and the conv rule reports it.

Example:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from graphs import trace
    >>> class StdConv(torch.nn.Conv2d):
    ...     def forward(self, x):
    ...         w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
    ...                          training=True, momentum=0.0).reshape_as(self.weight)
    ...         return F.conv2d(x, w, self.bias)
    >>> model = torch.nn.Sequential(StdConv(3, 4, 3), StdConv(4, 2, 3))
    >>> g = trace(model, torch.zeros(1, 3, 8, 8)).groups[1]
    >>> [m.short() for m in g.members], g.prunable, g.inexact
    (['0.out', '1.in'], True, '1 standardises its filters over their input channels (weight \
standardisation)')
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx

from graphs.context import TraceContext, arg

_AFFINE_OPS = {operator.mul, torch.mul, "mul", "view", "reshape", "flatten"}
_WEIGHT_NORM = {("parametrizations.weight.original1", "parametrizations.weight.original0"),
                ("weight_v", "weight_g")}  # (v, g): torch.nn.utils.parametrizations / the old


def parametrized_weight(ctx: TraceContext, weight) -> tuple[str, str] | None:
    """(owner, why pruning it is inexact or "") when ``weight`` is a layer's weight computed by
    a parametrization: ``weight_norm`` (``torch._weight_norm(v, g, 0)`` from the layer's own
    ``parametrizations.weight.original1/0`` or the old ``weight_v/weight_g``: exact, each output
    filter is normalised on its own and dead input columns add nothing to its norm) or
    ``spectral_norm`` (``original / sigma``: inexact, sigma is the largest singular value of
    the whole weight); None for anything else.

    Example:
        >>> from torch.nn.utils.parametrizations import weight_norm
        >>> from graphs import trace
        >>> model = torch.nn.Sequential(weight_norm(torch.nn.Conv2d(3, 4, 1)), torch.nn.Conv2d(4, 2, 1))
        >>> [m.short() for m in trace(model, torch.zeros(1, 3, 2, 2)).prunable[0].members]
        ['0.out', '1.in']
    """
    if not isinstance(weight, fx.Node):
        return None
    if weight.target is torch._weight_norm and len(weight.args) == 3 and weight.args[2] == 0:
        v, g = weight.args[:2]
        for v_name, g_name in _WEIGHT_NORM:
            owner = _owner(ctx, v, v_name)
            if owner is not None and owner == _owner(ctx, g, g_name):
                return owner, ""
    if weight.target in ("div", torch.div) and len(weight.args) == 2:
        source = weight.args[0]
        if isinstance(source, fx.Node) and source.target == "flatten" \
                and ctx.shape(source) == ctx.shape(source.args[0]):
            source = source.args[0]  # a 2-d weight's matrix: flatten(1) returned it as it is
        owner = _owner(ctx, source, "parametrizations.weight.original")
        if owner is not None:
            return owner, (f"{owner or 'the model'} divides its weight by its largest singular "
                           f"value (spectral_norm), which pruning changes")
    return None


def _owner(ctx: TraceContext, node, suffix: str) -> str | None:
    """The module owning parameter ``node`` when its name ends in ``.suffix``; else None."""
    if not _is_param(ctx, node) or not ("." + node.target).endswith("." + suffix):
        return None
    return node.target[:-len(suffix)].rstrip(".")


def standardised_weight(ctx: TraceContext, weight) -> fx.Node | None:
    """The ``get_attr`` node of the parameter a standardised conv weight is made from, or None
    when ``weight`` is not ``batch_norm(W.reshape(1, out, -1), training=True).reshape_as(W)``."""
    if not isinstance(weight, fx.Node) or weight.target != "reshape_as" or len(weight.args) != 2:
        return None
    norm, source = weight.args
    if not _is_param(ctx, source) or not isinstance(norm, fx.Node) \
            or norm.target is not F.batch_norm:
        return None
    flat, mean, var = (arg(norm, i, n) for i, n in ((0, "input"), (1, "running_mean"),
                                                     (2, "running_var")))
    out = ctx.params[source.target].shape[0]
    if mean is not None or var is not None or not arg(norm, 5, "training", False) \
            or arg(norm, 4, "bias") is not None or not _per_filter(ctx, flat, source, out):
        return None
    affine = arg(norm, 3, "weight")
    if affine is not None and not _own_per_channel(ctx, affine, source, out):
        return None
    return source


def _is_param(ctx: TraceContext, node) -> bool:
    return isinstance(node, fx.Node) and node.op == "get_attr" \
        and isinstance(ctx.params.get(node.target), torch.Tensor)


def _per_filter(ctx: TraceContext, flat, source: fx.Node, out: int) -> bool:
    """``flat`` is ``source`` reshaped to (1, out, fan-in): statistics per output filter."""
    fan_in = ctx.params[source.target][0].numel()
    return isinstance(flat, fx.Node) and flat.target in ("reshape", "view") \
        and flat.args[0] is source and ctx.shape(flat) == (1, out, fan_in)


def _own_per_channel(ctx: TraceContext, node, source: fx.Node, out: int) -> bool:
    """``node`` is computed only from numbers and parameters of ``source``'s module whose first
    dim is its output channels, by mul/view/reshape/flatten, and has ``out`` elements."""
    owner = source.target.rpartition(".")[0]
    if ctx.shape(node) != (out,):
        return False
    stack = [node]
    while stack:
        n = stack.pop()
        if n.op == "get_attr":
            t = ctx.params.get(n.target)
            if n.target.rpartition(".")[0] != owner or not isinstance(t, torch.Tensor) \
                    or t.dim() == 0 or t.shape[0] != out or t.numel() != out:
                return False
            continue
        if n.op not in ("call_function", "call_method") or n.target not in _AFFINE_OPS:
            return False
        for a in list(n.args) + list(n.kwargs.values()):
            if isinstance(a, fx.Node):
                stack.append(a)
            elif not isinstance(a, (int, float)):
                return False
    return True
