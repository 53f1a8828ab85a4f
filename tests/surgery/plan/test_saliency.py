"""Tests for surgery.plan.saliency: accumulators against hand-worked numbers, their criterion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphs import trace
from surgery.errors import SurgeryError
from surgery.io.models import LeNet
from surgery.plan.saliency import accumulate, criterion, make_accumulator
from surgery.plan.taylor import taylor_saliency

X = torch.zeros(1, 1, 28, 28)


def data(n: int = 2):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g))
            for _ in range(n)]


def feed(name: str, grads: list[float], w: float = 2.0) -> float:
    """Total saliency of one weight ``w`` after steps with gradients ``grads``."""
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(w)
    acc = make_accumulator(name)
    for g in grads:
        layer.weight.grad = torch.tensor([[g]])
        acc.update(layer)
    return float(acc.totals["weight"])


@pytest.mark.parametrize(("name", "expected"), [
    # step 1: m_hat = |g| = 1, v_hat = g^2 = 1 -> |2 * 1 * 1 / 1| = 2;
    # step 2: m = 0.39, v = 0.009999; m_hat = 0.39 / 0.19, v_hat = 0.009999 / 0.001999
    #         -> |2 * -3 * 2.0526 / 2.2365| = 5.50669
    ("seven", 7.506687),
    ("taylor", 2 * 1 + 2 * 3),
    ("hessian", 0.5 * 4 * 1 + 0.5 * 4 * 9),
])
def test_accumulators_against_hand_worked_numbers(name, expected):
    assert feed(name, [1.0, -3.0]) == pytest.approx(expected, rel=1e-6)


def test_seven_after_one_step_is_taylor():
    assert feed("seven", [0.5]) == pytest.approx(feed("taylor", [0.5]), rel=1e-7)


def test_accumulated_taylor_equals_taylor_saliency():
    torch.manual_seed(0)
    model = LeNet()
    ours = accumulate(model, data(), "taylor")
    reference = taylor_saliency(model, data())
    assert set(ours) == set(reference)
    for name, value in reference.items():
        assert torch.allclose(ours[name], value, rtol=1e-6, atol=0), name  # f64 vs f32 product


def test_accumulate_leaves_grads_and_weights_alone():
    torch.manual_seed(0)
    model = LeNet()
    model.fc1.weight.grad = torch.ones_like(model.fc1.weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    accumulate(model, data(), "seven")
    assert torch.equal(model.fc1.weight.grad, torch.ones_like(model.fc1.weight))
    assert model.conv1.weight.grad is None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


class Scaled(nn.Module):
    """Linear(4 -> 8), a layer scale on the root, Linear(8 -> 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)
        self.gamma = nn.Parameter(torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x) * self.gamma))


def test_criterion_counts_the_parameters_members_name():
    model = Scaled()
    ones = {n: torch.ones_like(p, dtype=torch.float64) for n, p in model.named_parameters()}
    group = trace(model, torch.zeros(1, 4)).prunable[0]
    assert {m.attr for m in group.members} == {"", "gamma"}
    # per channel: 4 fc1 weights + fc1 bias + gamma + 3 fc2 weights
    assert criterion(ones)(model, group).tolist() == [9.0] * 8


def test_errors():
    with pytest.raises(SurgeryError, match="unknown accumulated"):
        make_accumulator("l1")
    with pytest.raises(SurgeryError, match="at least one"):
        accumulate(LeNet(), [], "seven")
