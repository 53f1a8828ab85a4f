"""surgery.rebuild.respawn builds the same layers as the constructors would, without running them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import skip_init

from surgery.rebuild.lint import lint
from surgery.rebuild.surgeons import batch_norm, conv, linear

KEEP = {0: torch.tensor([0, 2, 3]), 1: torch.tensor([1, 3])}


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=False),
                                   nn.Conv1d(4, 5, 3, dilation=2), nn.Linear(4, 5),
                                   nn.BatchNorm2d(5)])
def test_fast_rebuild_equals_the_constructed_layer(layer):
    layer.train(False)
    surgeon = {nn.Linear: linear, nn.BatchNorm2d: batch_norm}.get(type(layer), conv)
    keep = {0: KEEP[0]} if isinstance(layer, nn.BatchNorm2d) else KEEP
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    new = surgeon(layer, keep)
    assert type(new) is type(layer) and new is not layer and not new.training
    for name, value in new.state_dict().items():
        old = layer.state_dict()[name]
        expected = old if old.dim() == 0 else old.index_select(0, keep[0])
        if old.dim() >= 2:
            expected = expected.index_select(1, keep[1])
        assert torch.equal(value, expected), name
        assert value.data_ptr() != old.data_ptr()  # new memory, never shared
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())  # old untouched
    assert str(new) == str(_constructed(layer, keep))


def _constructed(layer, keep):
    if isinstance(layer, nn.BatchNorm2d):
        return nn.BatchNorm2d(len(keep[0]))
    if isinstance(layer, nn.Linear):
        return nn.Linear(len(keep[1]), len(keep[0]))
    return skip_init(type(layer), len(keep[1]), len(keep[0]), layer.kernel_size, layer.stride,
                     layer.padding, layer.dilation, layer.groups, layer.bias is not None)


def test_fast_rebuild_keeps_hooks_and_frozen_flags():
    layer = nn.Conv2d(4, 5, 3)
    layer.register_forward_hook(lambda *a: None)
    layer.weight.requires_grad_(False)
    new = conv(layer, KEEP)
    assert list(new._forward_hooks.values()) == list(layer._forward_hooks.values())
    assert new._forward_hooks is not layer._forward_hooks
    assert not new.weight.requires_grad and new.bias.requires_grad
    assert (new.in_channels, new.out_channels) == (2, 3)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # weight_norm is what we test
def test_weight_norm_layers_are_cut_in_g_and_v_and_keep_their_hook():
    layer = nn.utils.weight_norm(nn.Conv2d(4, 5, 3))  # weight becomes a plain attribute
    new = conv(layer, KEEP)
    assert tuple(new.weight_v.shape) == (3, 2, 3, 3) and tuple(new.weight_g.shape) == (3, 1, 1, 1)
    x = torch.randn(1, 4, 6, 6)
    new(x[:, KEEP[1]])
    assert tuple(new.weight.shape) == (3, 2, 3, 3)  # recomputed by the kept pre-hook
    outputs_only = conv(layer, {0: KEEP[0]})  # the norm is over a filter's inputs: exact
    assert torch.allclose(outputs_only(x), layer(x)[:, KEEP[0]], atol=1e-6)


def test_lint_catches_a_conv_whose_weight_disagrees_with_its_channels():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    model[2].weight = nn.Parameter(torch.randn(4, 6, 3, 3))  # in_channels says 8
    problems = lint(model, torch.zeros(1, 3, 8, 8))
    assert problems == ["2 (Conv2d): in_channels=8 but its weight says 6"]


def test_lint_catches_a_batch_norm_with_inconsistent_buffers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    model[1].running_var = torch.ones(6)
    problems = lint(model, torch.zeros(1, 3, 8, 8))
    assert problems and "running the model fails" in problems[0]
