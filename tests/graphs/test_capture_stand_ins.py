"""Stand-ins in the capture: a convolution answers by shape (zeros), a batch norm of such
stand-ins by a view of its input (no memory); a norm of real values still runs for real."""

from __future__ import annotations

import gc

import torch
from torch import nn

from benchmarks.scale_memory import torch_peak
from graphs import trace
from graphs.capture import capture
from surgery import prune


def conv_bn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64),
                         nn.ReLU(inplace=True), nn.Conv2d(64, 8, 1)).eval()


def test_a_norm_of_stand_ins_takes_no_memory_in_the_trace():
    x = torch.zeros(1, 3, 64, 64)

    def forward(m):
        with torch.no_grad():
            return m(x)

    plain = torch_peak(conv_bn, forward).peak_bytes
    traced = torch_peak(conv_bn, lambda m: trace(m, x)).peak_bytes
    activation = 64 * 64 * 64 * 4  # one 64-channel map: the conv's zeros, never the norm's
    assert plain >= 2 * activation and traced < 1.5 * activation


def test_nodes_say_which_values_are_stand_ins():
    graph = capture(conv_bn(), torch.zeros(1, 3, 8, 8)).graph
    fake = {n.name: n.meta.get("fake") for n in graph.nodes if n.op == "call_function"}
    assert fake == {"conv2d": True, "batch_norm": True, "relu": True, "conv2d_1": True}


class NormFirst(nn.Module):
    """Branches on the values of a norm of its input: the norm must run for real."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(4)
        self.bn.running_mean.fill_(-10.0)  # -1 normalises to about +9
        self.big, self.small = nn.Conv2d(4, 6, 1), nn.Conv2d(4, 6, 1)

    def forward(self, x):
        y = self.bn(x)
        out = self.big(y) if y.mean() > 1 else self.small(y)
        return out + y.relu_().sum()


def test_a_norm_of_real_values_runs_for_real_and_leaves_the_input_alone():
    x = -torch.ones(1, 4, 5, 5)  # a view of it would be clamped to 0 by relu_
    graph = trace(NormFirst().eval(), x)
    assert "big" in {m.module for g in graph.groups for m in g.members}
    assert "small" not in {m.module for g in graph.groups for m in g.members}
    assert torch.equal(x, -torch.ones(1, 4, 5, 5))


def test_prune_gives_the_collector_back_as_it_was():
    x = torch.zeros(1, 3, 8, 8)
    prune(conv_bn(), x, ratio=0.5)
    assert gc.isenabled()
    gc.disable()
    try:
        prune(conv_bn(), x, ratio=0.5)
        assert not gc.isenabled()
    finally:
        gc.enable()
