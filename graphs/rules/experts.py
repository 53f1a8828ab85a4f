"""Coupling rules for mixtures of experts whose weights are 3-D parameters (experts, out, in).

Hugging Face's Mixtral, Qwen-MoE and OLMoE keep every expert's projection in one parameter,
``gate_up_proj`` (E, 2*I, H) and ``down_proj`` (E, H, I), run either as ``torch._grouped_mm(x,
w.transpose(-2, -1), offs=...)`` (rows of x sorted by expert) or as a loop over the experts hit,
``F.linear(x[tokens], self.gate_up_proj[e])`` (``rules.layers.linear`` reads the slice through
``expert_slice``). An expert's hidden unit is a row of ``gate_up_proj`` and a column of
``down_proj``; all experts share one tensor, so they keep the same units (the count must be one;
the importance sums over experts). The model's hidden width is the in-dim of ``gate_up_proj``
and the out-dim of ``down_proj``. The router (a linear on the hidden width) keeps its outputs.
Members name the parameters (``attr``), cut by ``surgery.rebuild.apply.cut_parameter``.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> class Experts(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.up = torch.nn.Parameter(torch.randn(2, 16, 8))  # 2 experts, 8 -> 16
    ...         self.down = torch.nn.Parameter(torch.randn(2, 8, 16))
    ...     def forward(self, x):
    ...         offs = torch.tensor([3, 5], dtype=torch.int32)
    ...         h = torch._grouped_mm(x, self.up.transpose(-2, -1), offs=offs).relu()
    ...         return torch._grouped_mm(h, self.down.transpose(-2, -1), offs=offs)
    >>> units = trace(Experts(), torch.randn(5, 8)).groups[1]
    >>> units.prunable, [m.short() for m in units.members]
    (True, ['up.out', 'down.in'])
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from graphs.channels import Flow
from graphs.context import TraceContext, arg
from graphs.datamodel import IN, OUT

GROUPED_MM = [torch._grouped_mm] + ([torch.nn.functional.grouped_mm]
                                    if hasattr(torch.nn.functional, "grouped_mm") else [])


def expert_weight(ctx: TraceContext, weight) -> tuple[str, str, int, int] | None:
    """(owner, parameter, its out dim, its in dim) when ``weight`` is a module's own 3-D
    parameter (E, out, in) as a grouped matmul takes it, (E, in, out): the parameter
    transposed, or stored transposed (then out and in swap); None otherwise."""
    swapped = isinstance(weight, fx.Node) and weight.target == "transpose" \
        and {a % 3 for a in weight.args[1:3] if isinstance(a, int)} == {1, 2}
    source = weight.args[0] if swapped else weight
    target = _own_parameter(ctx, source, 3)
    if target is None:
        return None
    owner, _, attr = target.rpartition(".")
    return (owner, attr, 1, 2) if swapped else (owner, attr, 2, 1)


def expert_slice(ctx: TraceContext, weight) -> tuple[str, str, int, int] | None:
    """(owner, parameter, out dim, in dim) when ``weight`` is one expert's (out, in) matrix
    ``self.w[e]`` of a module's own 3-D parameter, e an int or a 0-d integer tensor."""
    if not isinstance(weight, fx.Node) or weight.target not in ("__getitem__", operator.getitem):
        return None
    source, index = weight.args[:2]
    meta = index.meta.get("tensor_meta") if isinstance(index, fx.Node) else None
    scalar = isinstance(index, int) or (meta is not None and not meta.shape
                                        and not meta.dtype.is_floating_point)
    target = _own_parameter(ctx, source, 3) if scalar else None
    if target is None:
        return None
    owner, _, attr = target.rpartition(".")
    return owner, attr, 1, 2


def _own_parameter(ctx: TraceContext, node, ndim: int) -> str | None:
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    tensor = ctx.params.get(node.target)
    return node.target if isinstance(tensor, nn.Parameter) and tensor.dim() == ndim else None


def record_weight(ctx: TraceContext, site: tuple[str, str, int, int], x: Flow,
                  out_size: int, out_rank: int) -> Flow:
    """Record input channels ``x`` and fresh output channels on a parameter's dims; the
    output's channels are its last dim."""
    owner, attr, out_dim, in_dim = site
    ctx.sets.record(owner, IN, in_dim, x.ids, attr)
    out = ctx.sets.fresh(out_size)
    ctx.sets.record(owner, OUT, out_dim, out, attr)
    return Flow(out, out_rank - 1)


def grouped_mm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """``grouped_mm(x (S, in), w (E, in, out), offs)``: each expert's rows of x times its
    matrix; the channels of x are the parameter's in-dim, the output's its out-dim."""
    x_node, w = arg(node, 0, "mat_a", arg(node, 0, "input")), arg(node, 1, "mat_b")
    site, x, shape = expert_weight(ctx, w), ctx.flow(x_node), ctx.shape(x_node)
    out_shape = ctx.shape(node)
    if site is None or shape is None or out_shape is None or len(shape) != 2:
        return ctx.reject(node, "grouped_mm", "not a 2-d input times a module's own 3-d "
                                              "parameter")
    if x is None or x.dim != 1:
        x = ctx.untracked_input(node, x, shape[1])
    return record_weight(ctx, site, x, out_shape[-1], len(out_shape))


def experts_matmul(ctx: TraceContext, node: fx.Node, site: tuple[str, str, int, int],
                   x_node) -> Flow | None:
    """``torch.bmm(x (E, T, in), w (E, in, out))`` with ``w`` a module's own parameter: each
    expert's tokens times its matrix (``expert_weight`` says which dims)."""
    x, shape, out_shape = ctx.flow(x_node), ctx.shape(x_node), ctx.shape(node)
    if x is None or x.dim != len(shape) - 1:
        x = ctx.untracked_input(node, x, shape[-1])
    return record_weight(ctx, site, x, out_shape[-1], len(out_shape))


def index_add(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """``out.index_add_(dim, index, source)`` (or ``index_copy``) along another dim than the
    channels': the channels of ``out`` and ``source`` meet position by position (coupled)."""
    x, source = ctx.flow(node.args[0]), ctx.flow(arg(node, 3, "source"))
    shape, dim = ctx.shape(node.args[0]), arg(node, 1, "dim")
    if x is None and source is None:
        return None
    if x is None or source is None or shape is None or not isinstance(dim, int) \
            or dim % len(shape) == x.dim or x.dim != source.dim or x.size != source.size:
        return ctx.reject(node, "index_add", "adds along the channels, or into untracked ones")
    ctx.sets.union(x.ids, source.ids)
    return x
