"""Rules some timm CNN families need, each on a hand-written model: stacked paths (SKNet),
weight-standardised convs (NFNet, BiT) and ``reshape_as`` (LeViT); the timm models themselves run
under ``-m zoo``."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs import OUT, trace
from surgery import prune
from surgery.testing.oracle import check, randomize_norms


def exact(model, x, ratio=0.5):
    """The oracle: dead channels are removed and the output does not change; returns the graph."""
    c = check(randomize_norms(model.eval()), x, ratio)
    assert c.removed == c.dead and c.dead and c.shape_kept
    assert c.error <= 1e-4 and c.output_scale > 1e-6
    return c.graph, c.result


def members(group):
    return {m.short() for m in group.members}


class Selective(nn.Module):
    """Two conv paths stacked, a softmax over the paths per channel, a weighted sum (SKNet)."""

    def __init__(self, c=8, paths=2):
        super().__init__()
        self.num_paths = paths
        self.paths = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1 + i, dilation=1 + i),
                                                 nn.BatchNorm2d(c), nn.ReLU())
                                   for i in range(paths))
        self.reduce, self.select = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c * paths, 1)
        self.head = nn.Conv2d(c, 3, 1)

    def forward(self, x):
        x = torch.stack([p(x) for p in self.paths], dim=1)
        a = self.select(torch.relu(self.reduce(x.sum(1).mean((2, 3), keepdim=True))))
        b, c, h, w = a.shape
        a = torch.softmax(a.view(b, self.num_paths, c // self.num_paths, h, w), dim=1)
        return self.head(torch.sum(x * a, dim=1))


def test_stack_couples_the_paths_and_the_attention_over_them():
    graph, result = exact(Selective(), torch.randn(2, 8, 6, 6))
    (group,) = [g for g in graph.prunable if any(m.module == "paths.0.0" for m in g.members)]
    assert {"paths.0.0.out", "paths.1.0.out", "reduce.in", "select.out x2", "head.in"} \
        <= members(group)
    assert group.channels == 8 and not group.inexact
    assert result.model.select.out_channels == 8 and result.model.head.in_channels == 4


def test_stack_of_an_untracked_operand_is_reported():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            return torch.stack([y, torch.ones(1, 4, 2, 2)], dim=0).sum(0)

    graph = trace(Net(), torch.randn(1, 3, 2, 2))
    assert [u.op for u in graph.unsupported] == [
        "stack (an operand has no traced channels on the same dim)"]
    assert not any(g.prunable for g in graph.groups_of("conv"))


class StdConv(nn.Conv2d):
    """Scaled weight standardisation as timm's ``ScaledStdConv2d`` writes it (gain, scale)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = self.weight[0].numel() ** -0.5
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=(self.gain * self.scale).view(-1), training=True,
                              momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


def test_weight_standardised_conv_prunes_outputs_exactly_and_inputs_inexactly():
    model = nn.Sequential(StdConv(3, 8, 3), nn.ReLU(), StdConv(8, 8, 3, groups=8), nn.ReLU(),
                          StdConv(8, 6, 1), nn.ReLU(), nn.Conv2d(6, 2, 1))
    graph, result = exact(model, torch.randn(2, 3, 8, 8))
    first, last = graph.groups_of("0")[-1], graph.groups_of("4")[-1]
    assert members(first) == {"0.out", "2.out", "4.in"} and first.prunable
    assert "4 standardises its filters over their input channels" in first.inexact
    assert members(last) == {"4.out", "6.in"} and last.prunable and not last.inexact
    small = result.model[4]
    assert type(small) is StdConv and small.weight.shape[0] == small.out_channels == 3
    assert small.gain.shape == (3, 1, 1, 1) and small.scale == model[4].scale


def test_other_computed_conv_weights_are_reported():
    class Doubled(nn.Conv2d):
        def forward(self, x):
            return F.conv2d(x, self.weight * 2, self.bias)

    graph = trace(nn.Sequential(Doubled(3, 4, 1), nn.Conv2d(4, 2, 1)), torch.randn(1, 3, 2, 2))
    assert [u.node for u in graph.unsupported] == ["conv2d"]
    assert not any(g.prunable for g in graph.groups_of("1"))


class LinearNorm(nn.Module):
    """LeViT's Linear + BatchNorm1d over the tokens: ``bn(x.flatten(0, 1)).reshape_as(x)``."""

    def __init__(self, a, b):
        super().__init__()
        self.linear, self.bn = nn.Linear(a, b, bias=False), nn.BatchNorm1d(b)

    def forward(self, x):
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


def test_reshape_as_its_own_input_keeps_the_channels():
    model = nn.Sequential(nn.Linear(4, 6), LinearNorm(6, 8), nn.GELU(), LinearNorm(8, 6),
                          nn.Linear(6, 3))
    graph, _ = exact(model, torch.randn(2, 5, 4))
    hidden = graph.groups_of("1.linear")[-1]
    assert members(hidden) == {"1.linear.out", "1.bn.out", "3.linear.in"} and hidden.prunable


def test_reshape_as_a_tensor_of_other_channels_couples_them():
    """``a(x).reshape_as(b(x))`` reads its width from b's channels: a and b go together."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.c(self.a(x).reshape_as(self.b(x)) * 2)

    graph = trace(Net(), torch.randn(2, 4))
    group = graph.groups_of("a")[-1]
    assert group.prunable and {"a", "b", "c"} <= set(group.modules())
    small = prune(Net(), torch.randn(2, 4), ratio=0.5).model
    assert (small.a.out_features, small.b.out_features) == (3, 3)


FAMILIES = {"skresnet18": 0.6, "test_nfnet": 0.9, "levit_128s": 0.7, "test_mambaout": 0.25}


@pytest.mark.zoo
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_timm_family_prunes_exactly(name):
    from benchmarks.coverage_models import build, load_entries

    model, x = build(next(e for e in load_entries() if e["name"] == name))
    graph, _ = exact(model, x)
    widths = {n: m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
              for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd,
                                                                   nn.Linear))}
    covered = {(m.module, p) for g in graph.prunable for m in g.members
               if m.role == OUT and not m.attr and m.module in widths
               for c in m.indices for p in c}
    assert len(covered) / sum(widths.values()) >= FAMILIES[name]
