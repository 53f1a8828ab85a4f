"""Values made from a channel count: a scale that pruning those channels changes.

``x / math.sqrt(x.shape[1])``, ``x * C ** -0.5``, torchvision RAFT's
``corr / torch.sqrt(torch.tensor(num_channels))``: the pruned model scales by the kept count,
the model with dead channels by the full count, so their outputs differ even when the removed
channels are dead, and no rewrite keeps the old value. The channels the count was read from are
marked inexact (``sizes.mark_scale``), with the line. A width read from a dim that carries no
channels (``q.shape[-1] ** -0.5``, the head width, when whole heads are the channels) marks
nothing: pruning heads keeps it.

The capture records a size made a float as a ``float`` node (``graphs.size_ints``); a size
passed to a tensor op (``x / C``, ``torch.tensor(C)``) is an argument of that op's node
(``rules.tensor.elementwise`` marks those too).

Example:
    >>> import math
    >>> import torch
    >>> from graphs import trace
    >>> class Scaled(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         h = self.a(x)
    ...         return self.b(h / math.sqrt(h.shape[-1]))
    >>> hidden = trace(Scaled(), torch.zeros(1, 3)).groups_of("a")[-1]
    >>> hidden.prunable, hidden.inexact.startswith("a scale read from the channel count")
    (True, True)
"""

from __future__ import annotations

from torch import fx

from graphs.channels import Flow
from graphs.context import TraceContext, op_name
from graphs.datamodel import SIZE
from graphs.kinds import layer_kind
from graphs.sizes import channel_reads, mark_scale, size_attribute
from graphs.sources import at_source


def size_to_float(ctx: TraceContext, node: fx.Node) -> None:
    """A ``float`` node (a size made a float): the channels it was read from are inexact."""
    mark_scale(ctx, node, node.args)


def size_to_tensor(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """``torch.tensor(C)``, ``x.new_tensor(C)``: a tensor holding a count (no channels of its
    own); a channel count in it makes those channels inexact. A copy of a tensor with channels
    (``torch.tensor(h)``) is reported."""
    data = node.args[1:] if node.op == "call_method" else node.args  # new_tensor: x's dtype
    mark_scale(ctx, node, (data, node.kwargs))
    tensors: list[fx.Node] = []
    fx.node.map_arg(data, lambda a: tensors.append(a) if ctx.flow(a) is not None else None)
    return ctx.reject(node, op_name(node), "copies a tensor's channels") if tensors else None


def size_compared(ctx: TraceContext, node: fx.Node) -> None:
    """``assert x.shape[1] == self.channels`` (diffusers' Upsample2D): a channel count the
    forward found equal to a number. The number must follow pruning: one int attribute of the
    module equal to it becomes a SIZE member of those channels; otherwise they are blocked."""
    size, value = node.args
    for ids in channel_reads(ctx, size):
        owner, attr = size_attribute(ctx, node, value, Flow(ids, 0))
        if attr and layer_kind(ctx.submodule(owner)) is not None:
            continue  # a layer's own check (InstanceNorm's num_features): its rule sizes it
        if attr:
            ctx.sets.record(owner, SIZE, 0, ids, attr)
        else:
            ctx.sets.block(ids, f"the channel count is compared with {value}{at_source(node)}")
