"""graphs.shapes: the conv output-size shortcut must agree with the real layer, or step aside."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import fx, nn

from graphs.shapes import ShapeRunner, conv_output, norm_output
from graphs.trace import symbolic_trace

CASES = list(itertools.product((1, 2, 3), (1, 3, 4), (0, 1, 2), (1, 2), (5, 8)))


@pytest.mark.parametrize(("stride", "kernel", "padding", "dilation", "side"), CASES)
def test_conv_formula_matches_the_real_conv(stride, kernel, padding, dilation, side):
    conv = nn.Conv2d(4, 6, kernel, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 4, side, side + 1)
    with torch.no_grad():
        try:
            real = conv(x)
        except RuntimeError:
            real = None
    fast = conv_output(conv, (x,), {})
    if real is None:
        assert fast is None  # the real layer's own error must surface
    else:
        assert fast is not None and fast.shape == real.shape and fast.dtype == real.dtype


@pytest.mark.parametrize("layer", [nn.Conv1d(4, 6, 3, stride=2), nn.Conv3d(4, 6, 3, padding=1),
                                   nn.Conv2d(4, 8, 3, groups=4), nn.Conv2d(4, 6, 3, bias=False)])
def test_conv_formula_other_ranks_groups_and_unbatched(layer):
    spatial = len(layer.kernel_size)
    for x in (torch.randn(2, 4, *[7] * spatial), torch.randn(4, *[7] * spatial)):
        with torch.no_grad():
            assert conv_output(layer, (x,), {}).shape == layer(x).shape


@pytest.mark.parametrize("x", [torch.randn(1, 3, 8, 8), torch.randn(1, 4, 8, 8).double(),
                               torch.randn(4, 8), torch.randn(1, 4, 2, 2)])
def test_inputs_the_layer_rejects_run_the_real_layer(x):
    assert conv_output(nn.Conv2d(4, 6, 3), (x,), {}) is None


def test_unusual_layers_run_the_real_layer():
    x = torch.randn(1, 4, 8, 8)
    assert conv_output(nn.Conv2d(4, 6, 3, padding="same"), (x,), {}) is None
    assert conv_output(nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), (x,), {}) is None

    class MyConv(nn.Conv2d):
        pass

    assert conv_output(MyConv(4, 6, 3), (x,), {}) is None
    broken = nn.Conv2d(4, 6, 3)
    broken.weight = nn.Parameter(torch.randn(6, 2, 3, 3))  # weight disagrees with in_channels
    assert conv_output(broken, (x,), {}) is None


def test_shape_runner_gives_the_real_shapes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 7 * 7, 5)).eval()
    x = torch.randn(2, 3, 16, 16)
    shapes = {}

    class Recorder(ShapeRunner):
        def run_node(self, n: fx.Node):
            out = super().run_node(n)
            shapes[n.name] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            return out

    with torch.no_grad():
        out = Recorder(model, symbolic_trace(model)).run(x)
        assert out.shape == model(x).shape
    assert shapes["_0"] == (2, 8, 7, 7) and shapes["_3"] == (2, 4, 7, 7)


def test_batch_norm_passes_the_runners_own_zeros_through_after_checks():
    bn = nn.BatchNorm2d(4).eval()
    x = torch.zeros(1, 4, 5, 5)
    assert norm_output(bn, (x,), {}) is x
    assert norm_output(bn, (torch.zeros(1, 3, 5, 5),), {}) is None  # wrong channels
    assert norm_output(bn, (torch.zeros(4, 5),), {}) is None  # wrong rank for BatchNorm2d
    assert norm_output(bn.train(), (x,), {}) is None  # training mode uses batch statistics
    bad = nn.BatchNorm2d(4).eval()
    bad.running_mean = torch.zeros(3)  # a surgeon bug: the real layer must complain
    assert norm_output(bad, (x,), {}) is None


def test_shape_runner_never_aliases_the_callers_input():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(inplace=True)).eval()
    x = -torch.ones(1, 3, 4, 4)
    with torch.no_grad():
        ShapeRunner(model, symbolic_trace(model)).run(x)
    assert torch.equal(x, -torch.ones(1, 3, 4, 4))  # BatchNorm ran for real on a foreign input
