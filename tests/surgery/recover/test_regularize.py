"""Tests for surgery.recover.regularize: penalties by hand, and training that lowers them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphs import trace
from surgery.recover.regularize import (
    group_lasso_penalty,
    regularized_loss,
    slimming_penalty,
)
from surgery.recover.train import train
from tests.hand_models import INPUTS, group_of, two_layer


def test_group_lasso_penalty_by_hand_and_differentiable():
    net = two_layer()
    group = group_of(net, INPUTS[:1])
    with torch.no_grad():
        net[2].weight.copy_(torch.tensor([[3.0, 0.0, 4.0]]))
    # channel norms: sqrt(1 + 0 + 9), sqrt(1 + 0 + 0), sqrt(1 + 0 + 16) (bias 0)
    penalty = group_lasso_penalty(net, (group,))
    assert float(penalty.detach()) == pytest.approx(10 ** 0.5 + 1 + 17 ** 0.5, rel=1e-6)
    penalty.backward()
    assert torch.allclose(net[2].weight.grad, torch.tensor([[3 / 10 ** 0.5, 0.0, 4 / 17 ** 0.5]]))


def bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def data():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(10)]


@pytest.mark.parametrize("kind", ["slimming", "group_lasso"])
def test_regularised_training_lowers_its_penalty_against_plain_training(kind):
    x = torch.zeros(1, 1, 8, 8)
    penalties = []
    for strength in (0.0, 0.05):
        torch.manual_seed(0)
        net = bn_net()
        groups = trace(net, x).prunable
        train(net, data(), epochs=3, optimizer="adam", lr=1e-2, progress=False,
              loss_fn=regularized_loss(net, example_inputs=x, **{kind: strength}))
        penalty = slimming_penalty(net) if kind == "slimming" else \
            group_lasso_penalty(net, groups)
        penalties.append(float(penalty.detach()))
    assert penalties[1] < 0.85 * penalties[0]
