"""Tests for surgery.plan.criteria_data against hand-worked answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphs import trace
from surgery.errors import SurgeryError
from surgery.io.models import LeNet
from surgery.plan.criteria_data import DATA_CRITERIA, apoz, hessian, mean_activation
from surgery.prune import prune
from tests.hand_models import INPUTS, group_of, two_layer


def test_apoz_and_mean_activation_by_hand():
    net = two_layer()
    batches = [(INPUTS, torch.zeros(4))]
    group = group_of(net, INPUTS[:1])
    assert apoz(net, batches)(net, group).tolist() == [0.75, 0.25, 0.75]  # non-zero fraction
    assert mean_activation(net, batches)(net, group).tolist() == [1.5, 0.25, 1.0]


def test_apoz_reads_the_norm_output_when_the_group_has_one():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 1, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
    net[1].running_mean.copy_(torch.tensor([0.0, 100.0]))  # channel 1 always negative (eval)
    x = torch.rand(3, 1, 4, 4)
    scores = apoz(net, [(x, None)])(net, group_of(net, x[:1]))
    assert scores.tolist() == [1.0, 0.0]


def test_activation_criteria_prune_lenet():
    torch.manual_seed(0)
    model, x = LeNet(), torch.zeros(1, 1, 28, 28)
    batches = [(torch.randn(8, 1, 28, 28), torch.arange(8))]
    for name in ("apoz", "mean_activation", "hessian"):
        result = prune(model, x, ratio=0.5, importance=DATA_CRITERIA[name](model, batches))
        assert result.plan.importance == name
        assert result.model.fc1.out_features == 60


def test_hessian_is_half_squared_weight_times_gradient_summed_per_channel():
    torch.manual_seed(0)
    model = LeNet()
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    nn.functional.cross_entropy(model(x), y).backward()
    s = {n: 0.5 * (p.detach().double() * p.grad.double()) ** 2 for n, p in model.named_parameters()}
    expected = (s["conv1.weight"].sum(dim=(1, 2, 3)) + s["conv1.bias"]
                + s["conv2.weight"].sum(dim=(0, 2, 3)))
    got = hessian(model, [(x, y)])(model, group_of(model, x[:1]))
    assert torch.allclose(got, expected, rtol=1e-9)


def test_activation_criterion_on_another_model_raises():
    criterion = apoz(two_layer(), [(INPUTS, None)])
    other = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(),
                          nn.Linear(3, 1))
    with pytest.raises(SurgeryError, match="no activations"):
        criterion(other, trace(other, INPUTS[:1]).prunable[1])  # produced by "2": not watched
