"""Small models whose scores and penalties are worked out by hand in the tests."""

from __future__ import annotations

import torch
from torch import nn

from graphs import trace

# Linear(2 -> 3) with rows [1, 0], [-1, 0], [0, 1]: channel c of these inputs is
# ch0 = x0 = [1, -1, 2, 3], ch1 = -x0 = [-1, 1, -2, -3], ch2 = x1 = [1, 1, -1, 2]
INPUTS = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [2.0, -1.0], [3.0, 2.0]])


def two_layer() -> nn.Module:
    """Linear(2, 3) with the rows above and no bias -> ReLU -> Linear(3, 1)."""
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]))
        net[0].bias.zero_()
    return net


def group_of(net: nn.Module, x: torch.Tensor):
    """The first prunable group of ``net`` (the 3 hidden channels)."""
    return trace(net, x).prunable[0]
