"""Tracing: each coupling rule against hand-worked reference groups."""

import re

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from graphs import IN, OUT, TraceError, trace
from graphs.channels import Flow, connected_components
from graphs.errors import Refused
from graphs.rules.defaults import default_rules
from graphs.rules.index import index_dim
from graphs.rules.shape import flatten_ids
from graphs.rules.table import method
from surgery.io.models import LeNet


def summary(graph):
    return [(g.channels, g.prunable, sorted((m.module, m.role) for m in g.members))
            for g in graph.groups]


def test_lenet_groups_are_the_reference():
    graph = trace(LeNet(), torch.zeros(1, 1, 28, 28))
    assert summary(graph) == [
        (1, False, [("conv1", IN)]),
        (6, True, [("conv1", OUT), ("conv2", IN)]),
        (16, True, [("conv2", OUT), ("fc1", IN)]),
        (120, True, [("fc1", OUT), ("fc2", IN)]),
        (84, True, [("fc2", OUT), ("fc3", IN)]),
        (10, False, [("fc3", OUT)]),
    ]
    assert graph.groups[0].reason == "touches the model input"
    assert graph.groups[-1].reason == "touches the model output"
    fc1_in = next(m for m in graph.groups[2].members if m.module == "fc1")
    assert fc1_in.indices[3] == tuple(range(3 * 16, 4 * 16))  # flatten: channel 3 = 16 features


def test_residual_add_couples_both_branches():
    graph = trace(torchvision.models.resnet18(), torch.zeros(1, 3, 32, 32))
    group = graph.groups_of("layer2.0.downsample.0")[-1]
    modules = {(m.module, m.role) for m in group.members}
    assert {("layer2.0.conv2", OUT), ("layer2.0.downsample.0", OUT), ("layer2.1.conv2", OUT),
            ("layer3.0.conv1", IN), ("layer3.0.downsample.0", IN)} <= modules
    assert group.channels == 128 and group.prunable


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1)
        self.head = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


def test_concat_offsets_consumer_slices():
    graph = trace(Concat(), torch.zeros(1, 3, 8, 8))
    b_group = graph.groups_of("b")[-1]
    head = next(m for m in b_group.members if m.module == "head")
    assert head.indices == tuple((4 + c,) for c in range(6))


class Split(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.left, self.right = nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        a, b = torch.chunk(self.stem(x), 2, dim=1)
        return self.left(a) + self.right(b)


def test_chunk_couples_position_i_of_both_pieces():
    graph = trace(Split(), torch.zeros(1, 3, 8, 8))
    (group,) = [g for g in graph.groups_of("stem") if g.prunable]
    stem = next(m for m in group.members if m.module == "stem" and m.role == OUT)
    assert stem.indices == ((0, 4), (1, 5), (2, 6), (3, 7))  # both pieces lose the same ones
    assert {m.module for m in group.members if m.role == IN} == {"left", "right"}


def test_depthwise_conv_passes_channels_through():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 4, 1))
    graph = trace(model, torch.zeros(1, 3, 8, 8))
    group = graph.groups_of("1")[0]
    assert sorted((m.module, m.role) for m in group.members) == [("0", OUT), ("1", OUT), ("2", IN)]


def test_grouped_conv_keeps_its_group_structure():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 4, 1))
    graph = trace(model, torch.zeros(1, 3, 8, 8))
    assert all(g.prunable and g.channels == 4 for g in graph.groups_of("1"))


class Unknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.b(torch.cumsum(self.a(x), dim=1))


def test_unknown_op_is_reported_never_guessed():
    graph = trace(Unknown(), torch.zeros(1, 3, 8, 8))
    assert [u.op for u in graph.unsupported] == ["cumsum"]
    assert "test_trace.py" in graph.unsupported[0].source
    assert not any(g.prunable for g in graph.groups_of("a"))
    assert "unsupported op cumsum" in graph.groups_of("a")[-1].reason


def test_ignore_keeps_a_layers_outputs():
    graph = trace(LeNet(), torch.zeros(1, 1, 28, 28), ignore=("conv2",))
    assert graph.groups_of("conv2")[-1].reason == "ignored layer conv2"
    assert graph.groups_of("conv1")[-1].prunable


def test_ignore_naming_a_missing_layer_is_an_error():
    with pytest.raises(TraceError, match="not in the model: conv9"):
        trace(LeNet(), torch.zeros(1, 1, 28, 28), ignore=("conv9",))


def test_input_that_does_not_fit_names_the_node():
    with pytest.raises(TraceError, match="does not fit the model LeNet .*in conv1 .Conv2d."):
        trace(LeNet(), torch.zeros(1, 3, 28, 28))


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


def test_a_branch_on_tensor_values_is_followed_and_noted_with_its_line():
    graph = trace(Branchy(), torch.zeros(1, 3))
    assert len(graph.notes) == 1 and "__bool__" in graph.notes[0]
    assert re.search(r"test_trace.py:\d+: if x.sum\(\) > 0", graph.notes[0])
    assert "note: the forward reads tensor values" in str(graph)


class ShapeIf(nn.Module):
    """torch.fx cannot trace an ``if`` on a shape; the real forward takes it as it comes."""

    def __init__(self):
        super().__init__()
        self.conv, self.big, self.small = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 3)

    def forward(self, x):
        x = self.conv(x)
        return self.big(x) if x.shape[-1] > 4 else self.small(x)


def test_an_if_on_a_shape_takes_the_branch_of_the_example_inputs():
    graph = trace(ShapeIf(), torch.zeros(1, 3, 8, 8))
    group = next(g for g in graph.prunable if g.channels == 8)
    assert group.modules() == ("conv", "big") and graph.notes == ()


def test_trace_leaves_the_model_alone():
    model = torchvision.models.resnet18().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace(model, torch.randn(2, 3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_printed_graph_is_readable():
    text = str(trace(LeNet(), torch.zeros(1, 1, 28, 28)))
    assert "6 groups, 4 prunable" in text and "conv2.out  fc1.in x16" in text


def test_connected_components_and_shape_maths():
    labels = connected_components(5, [(np.array([4, 2]), np.array([1, 4]))])
    assert labels.tolist() == [0, 1, 1, 3, 1]
    assert flatten_ids(Flow(np.array([5, 6]), 1), (1, 2, 2, 1), 1, 3).ids.tolist() == [5, 5, 6, 6]
    assert index_dim((slice(None), slice(None), 0), 1, 4) == 1
    assert index_dim((Ellipsis, 0), 1, 4) == 1
    assert index_dim((slice(None), slice(0, 2)), 1, 4) is None


def test_reasons_in_torchvision_code_name_the_torchvision_line():
    """torchvision's path starts like torch's: it must not be skipped as torch internals. (Its
    bias table lookup, once reported here, is supported now; its head width C // num_heads is a
    size that does not follow pruning, reported with the line.)"""
    from torchvision.models.swin_transformer import SwinTransformer

    model = SwinTransformer([4, 4], 16, [2], [2], [4, 4], num_classes=3)
    graph = trace(model, torch.zeros(1, 3, 16, 16))
    reason = next(g.reason for g in graph.groups if "qkv.reshape" in g.reason)
    assert "torchvision/models/swin_transformer.py:" in reason


def _sinh_table(rule):
    table = default_rules()
    table.register(method("sinh"), rule)  # Tensor.sinh has no rule by default
    return table


def test_a_rule_that_fails_is_a_bug_never_an_unsupported_op():
    def broken(ctx, node):
        raise KeyError("oops")

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1))
    model.forward = lambda x: model[1](model[0](x).sinh())
    with pytest.raises(TraceError, match=r"coupling rule .*broken failed on sinh .*a bug.*KeyError"):
        trace(model, torch.zeros(1, 3, 2, 2), rules=_sinh_table(broken))


def test_a_rule_that_refuses_reports_the_op_with_its_reason():
    def refusing(ctx, node):
        raise Refused("cannot follow this call")

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1))
    model.forward = lambda x: model[1](model[0](x).sinh())
    graph = trace(model, torch.zeros(1, 3, 2, 2), rules=_sinh_table(refusing))
    assert [u.op for u in graph.unsupported] == ["sinh (cannot follow this call)"]
    assert not graph.groups_of("0")[-1].prunable
