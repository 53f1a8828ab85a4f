"""The coupling rules the torchvision CNN families need, each on a small model of its own."""

import torch
import torchvision
from torch import nn

from graphs import IN, OUT
from surgery.testing.oracle import check, randomize_norms


def exact(model, x, ratio=0.5):
    """The oracle: dead channels are removed and the output does not change; returns the graph."""
    c = check(randomize_norms(model.eval()), x, ratio)
    assert c.removed == c.dead and c.shape_kept
    assert c.error <= 1e-4
    return c.graph, c.result


def member(group, module, role):
    return next(m for m in group.members if m.module == module and m.role == role)


def test_grouped_conv_couples_the_same_position_of_every_group():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 6, 3, groups=2),
                          nn.ReLU(), nn.Conv2d(6, 4, 1))
    graph, result = exact(model, torch.randn(2, 3, 6, 6))
    into = graph.groups_of("0")[-1]  # conv 0's 8 outputs = 4 positions x 2 groups
    assert into.channels == 4 and member(into, "0", OUT).indices[1] == (1, 5)
    assert member(into, "2", IN).indices == ((0,), (1,), (2,), (3,))  # weight dim 1 positions
    out = graph.groups_of("4")[0]
    assert out.channels == 3 and member(out, "2", OUT).indices[0] == (0, 3)
    assert result.model[2].groups == 2 and result.model[2].weight.shape[:2] == (4, 2)


def test_chunk_and_tensor_split_couple_pieces_and_literal_splits_block():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 1)
            self.head = nn.Conv2d(12, 2, 1)

        def forward(self, x):
            p, q = torch.tensor_split(self.a(x), 2, dim=1)  # coupled
            r, s = torch.split(self.b(x), 3, dim=1)  # literal size: blocked
            t, u = torch.tensor_split(self.c(x), [2], dim=1)  # literal index: blocked
            return self.head(torch.cat([p + q, r * s, t, u], dim=1))

    graph, _ = exact(Net(), torch.randn(2, 3, 4, 4))
    a = graph.groups_of("a")[-1]
    assert a.prunable and member(a, "a", OUT).indices == ((0, 3), (1, 4), (2, 5))
    assert not any(g.prunable for g in graph.groups_of("b") + graph.groups_of("c"))
    assert "tensor_split at node tensor_split_1 splits channels" in graph.groups_of("c")[-1].reason
    assert "split at node split splits channels into fixed sizes [3, 3] (at " \
        in graph.groups_of("b")[-1].reason and "test_rules_cnn.py" in graph.groups_of("b")[-1].reason


def test_channel_shuffle_couples_groups_and_follows_the_transpose():
    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 4, 1)

        def forward(self, x):
            return self.b(torchvision.models.shufflenetv2.channel_shuffle(self.a(x), 2))

    graph, _ = exact(Shuffle(), torch.randn(2, 3, 4, 4))
    (group,) = [g for g in graph.groups_of("a") if g.prunable]
    # channel j of group k sits at a's output k*3 + j and, after the shuffle, at b's input 2j + k
    assert member(group, "a", OUT).indices == ((0, 3), (1, 4), (2, 5))
    assert member(group, "b", IN).indices == ((0, 1), (2, 3), (4, 5))


def test_reshape_with_a_literal_channel_size_blocks():
    class Literal(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.fc = nn.Conv2d(3, 4, 1), nn.Linear(4 * 16, 2)

        def forward(self, x):
            return self.fc(self.a(x).view(-1, 64))

    graph, _ = exact(Literal(), torch.randn(2, 3, 4, 4))
    (group,) = graph.groups_of("a")[-1:]
    assert not group.prunable and "literal channel size" in group.reason


def test_stochastic_depth_and_hard_activations_pass_channels_through():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Hardswish(),
                          torchvision.ops.StochasticDepth(0.2, "row"), nn.Hardsigmoid(), nn.SiLU(),
                          nn.Conv2d(4, 2, 1))
    graph, _ = exact(model, torch.randn(2, 3, 4, 4))
    assert not graph.unsupported
    assert [m.short() for m in graph.groups_of("0")[-1].members] == ["0.out", "5.in"]


def test_squeeze_excitation_couples_scale_with_input_and_prunes_its_hidden_width():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), torchvision.ops.SqueezeExcitation(8, 4),
                          nn.Conv2d(8, 2, 1))
    graph, _ = exact(model, torch.randn(2, 3, 4, 4))
    x_group = graph.groups_of("0")[-1]
    assert {(m.module, m.role) for m in x_group.members} == {
        ("0", OUT), ("1.fc1", IN), ("1.fc2", OUT), ("2", IN)}
    hidden = graph.groups_of("1.fc1")[-1]
    assert hidden.prunable and hidden.channels == 4


def test_input_slices_by_literal_index_block_only_what_they_touch():
    class TransformInput(nn.Module):  # as googlenet(transform_input=True)
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            parts = [torch.unsqueeze(x[:, k], 1) * 0.5 + 0.1 for k in range(3)]
            return self.b(self.a(torch.cat(parts, 1)))

    graph, _ = exact(TransformInput(), torch.randn(2, 3, 4, 4))
    assert not graph.unsupported
    assert graph.groups_of("a")[-1].prunable
    assert "carries no traced channels" in graph.groups_of("a")[0].reason
