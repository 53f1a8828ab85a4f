"""``F.pixel_shuffle`` / ``F.pixel_unshuffle`` (``nn.PixelShuffle``, ``nn.PixelUnshuffle``).

``pixel_shuffle(x, r)`` turns (*, C*r*r, H, W) into (*, C, H*r, W*r): output channel c is made
of input channels c*r*r .. c*r*r + r*r - 1 (one per offset in its r x r block), so those r*r
channels go together, and the output channel is one channel of them (like a reshape into
groups of r*r). ``pixel_unshuffle`` is the reverse: input channel c becomes output channels
c*r*r .. c*r*r + r*r - 1, a run of r*r positions (like flatten). Neither writes a channel count,
so pruning whole runs is exact.

Example:
    >>> import numpy as np
    >>> from graphs.channels import Flow
    >>> shuffled(Flow(np.arange(8), 1), 4).ids.tolist(), unshuffled(Flow(np.array([5, 9]), 1),
    ...                                                            4).ids.tolist()
    ([0, 4], [5, 5, 5, 5, 9, 9, 9, 9])
"""

from __future__ import annotations

import numpy as np
from torch import fx

from graphs.channels import Flow
from graphs.context import TraceContext, op_name


def shuffled(x: Flow, area: int) -> Flow:
    """The channels after ``pixel_shuffle``: each run of ``area`` (r*r) channels is one (the
    first id of each run stands for it; the caller couples the run)."""
    return Flow(x.ids.reshape(-1, area)[:, 0].copy(), x.dim)


def unshuffled(x: Flow, area: int) -> Flow:
    """The channels after ``pixel_unshuffle``: each channel becomes a run of ``area``."""
    return Flow(np.repeat(x.ids, area), x.dim)


def pixel_shuffle(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Couple each run of r*r input channels (one output channel) and pass the runs on."""
    x, area = _channels(ctx, node)
    if isinstance(area, str):
        return ctx.reject(node, op_name(node), area)
    if area is None:
        return x
    runs = x.ids.reshape(-1, area)
    for column in runs.T[1:]:
        ctx.sets.union(runs[:, 0].copy(), column.copy())
    return shuffled(x, area)


def pixel_unshuffle(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Each input channel becomes a run of r*r output channels."""
    x, area = _channels(ctx, node)
    if isinstance(area, str):
        return ctx.reject(node, op_name(node), area)
    if area is None:
        return x
    return unshuffled(x, area)


def _channels(ctx: TraceContext, node: fx.Node) -> tuple[Flow | None, int | str | None]:
    """(input flow, r*r) when the channels sit on the shuffled channel dim (-3); (flow, None)
    when they sit on a batch dim before it (passed as they are); (flow, why) when they sit on
    a spatial dim; (None, None) without channels."""
    x, before, after = ctx.flow(node.args[0]), ctx.shape(node.args[0]), ctx.shape(node)
    if x is None or before is None or after is None:
        return None, None
    axis = len(before) - 3
    if x.dim < axis:
        return x, None
    if x.dim > axis:
        return x, "channels on a spatial dim"
    small, large = sorted((before[axis], after[axis]))
    return x, large // small
