"""Parameters and buffers used outside a layer function: layer scale, class token, position
embedding (``bare_parameter``), and buffers concatenated into a layer's bias (``buffer_pieces``).
Their channels are members by name, sliced by surgery with the rest of their group."""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from graphs.channels import Flow
from graphs.context import TraceContext
from graphs.datamodel import OUT
from graphs.kinds import LAYER_FUNCTIONS, layer_kind
from graphs.rules.experts import GROUPED_MM

_READ_BY_RULES = LAYER_FUNCTIONS | {torch.addmm, *GROUPED_MM}  # rules.layers / rules.experts


_MATMULS = {torch.matmul, torch.bmm, "matmul", "bmm", "__matmul__"}


def _read_by_rule(node: fx.Node) -> bool:
    """A layer rule reads this parameter: it is the weight of a layer function, directly or as
    one expert's slice ``w[e]`` or transposed (``rules.experts``)."""
    for user in node.users:
        if user.target in _READ_BY_RULES or user.target in _MATMULS and len(
                node.meta["tensor_meta"].shape) == 3 and user.args[1] is node:
            return True  # a 3-d right operand of bmm: one matrix per expert (rules.experts)
        if (user.target in ("transpose", "__getitem__") or user.target is operator.getitem) \
                and any(u.target in _READ_BY_RULES for u in user.users):
            return True
    return False


def bare_parameter(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """A parameter used outside a layer function (layer scale, class token, position embedding):
    its last dim longer than 1 carries channels, which it loses with the rest of its group.

    Parameters of torch layers (and their subclasses) are read by the layer rules instead.
    """
    tensor = ctx.params.get(node.target)
    if not isinstance(tensor, nn.Parameter) or not tensor.is_floating_point():
        return None
    if ".parametrizations." in "." + node.target:  # a parametrized weight's originals:
        return None  # the layer rule reads them (weights.parametrized_weight)
    owner, _, attr = node.target.rpartition(".")
    module = ctx.submodule(owner)
    if layer_kind(module) is not None or _read_by_rule(node):
        return None
    dims = [d for d, n in enumerate(tensor.shape) if n > 1]
    if not dims:
        return None
    ids = ctx.sets.fresh(tensor.shape[dims[-1]])
    ctx.sets.record(owner, OUT, dims[-1], ids, attr)
    return Flow(ids, dims[-1])


def buffer_pieces(ctx: TraceContext, nodes: list, dim: int) -> list[Flow] | None:
    """Channels along ``dim`` of modules' own float buffers that are concatenated with tracked
    tensors along their channel dim (BEiT's ``torch.cat((self.q_bias, self.k_bias,
    self.v_bias))`` with a zero ``k_bias`` buffer): their positions are new channels, members by
    name that surgery slices with the rest. None (nothing recorded) unless every node is one.
    """
    found = []
    for node in nodes:
        target = node.target if isinstance(node, fx.Node) and node.op == "get_attr" else ""
        tensor, (owner, _, attr) = ctx.params.get(target), target.rpartition(".")
        if not isinstance(tensor, torch.Tensor) or isinstance(tensor, nn.Parameter) \
                or not tensor.is_floating_point() or not 0 <= dim < tensor.dim() \
                or attr not in ctx.submodule(owner)._buffers:
            return None
        found.append((owner, attr, tensor.shape[dim]))
    flows = []
    for owner, attr, size in found:
        flows.append(Flow(ctx.sets.fresh(size), dim))
        ctx.sets.record(owner, OUT, dim, flows[-1].ids, attr)
    return flows
