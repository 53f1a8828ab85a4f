"""Taylor importance: reference values by hand, oracle exactness, no side effects."""

import pytest
import torch
from torch import nn

from graphs import trace
from surgery import Budget, SurgeryError, prune
from surgery.io.models import LeNet
from surgery.plan.taylor import taylor, taylor_saliency
from surgery.testing.oracle import kill_channels, randomize_norms, relative_error

X = torch.zeros(1, 1, 28, 28)


def batches(n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,), generator=g))
            for _ in range(n)]


def test_taylor_score_equals_hand_computed_sum_over_members():
    torch.manual_seed(0)
    model = LeNet()
    data = batches()
    fc2_group = next(g for g in trace(model, X).prunable
                     if any(m.module == "fc2" and m.role == "out" for m in g.members))
    got = taylor(model, data)(model, fc2_group)
    want = torch.zeros(84, dtype=torch.float64)
    for x, y in data:
        loss = nn.functional.cross_entropy(model(x), y)
        w2, b2, w3 = model.fc2.weight, model.fc2.bias, model.fc3.weight
        g2, gb2, g3 = torch.autograd.grad(loss, [w2, b2, w3])
        want += ((w2 * g2).abs().sum(1) + (b2 * gb2).abs() + (w3 * g3).abs().sum(0)).double()
    assert torch.allclose(got, want, rtol=1e-6)


def test_taylor_removes_dead_channels_exactly():
    torch.manual_seed(0)
    model = LeNet().eval()
    with torch.no_grad():  # every live unit active, so no live channel has a zero gradient
        model.fc1.bias.add_(2.0)
        model.fc2.bias.add_(2.0)
    x = torch.randn(2, 1, 28, 28)
    dead = kill_channels(model, trace(model, x), ratio=0.5, seed=3)
    with torch.no_grad():
        expected = model(x)
    result = prune(model, x, ratio=0.5, importance=taylor(model, batches()))
    assert {g.group: g.removed_channels for g in result.plan.groups} == dead
    with torch.no_grad():
        assert relative_error(result.model(x), expected) <= 1e-4
    assert result.plan.importance == "taylor"


def test_taylor_leaves_grads_and_batchnorm_statistics_alone():
    torch.manual_seed(0)
    model = randomize_norms(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                          nn.Flatten(), nn.Linear(4 * 26 * 26, 10))).train()
    stats = model[1].running_mean.clone()
    saliency = taylor_saliency(model, batches(n=1))
    assert torch.equal(model[1].running_mean, stats) and model.training
    assert all(p.grad is None for p in model.parameters())
    assert set(saliency) == {n for n, _ in model.named_parameters()}


def test_max_batches_limits_what_is_read():
    torch.manual_seed(0)
    model = LeNet()
    one = taylor_saliency(model, batches(n=1))
    capped = taylor_saliency(model, batches(n=3), max_batches=1)
    assert all(torch.equal(one[k], capped[k]) for k in one)


def test_taylor_without_batches_is_refused():
    with pytest.raises(SurgeryError, match="at least one"):
        taylor(LeNet(), [])


# --- custom criteria are checked: shape [C], finite, >= 0; the error names the group -------

def _fixed(values):
    def criterion(model, group):
        return values(group.channels)
    return criterion


@pytest.mark.parametrize("values,message", [
    (lambda c: torch.ones(c - 2), r"shape \[4\] for group \d+ \(conv1, conv2\).*expected \[6\]"),
    (lambda c: torch.ones(c, 2), r"shape \[6, 2\]"),
    (lambda c: torch.ones(c + 5), r"shape \[11\]"),
    (lambda c: torch.tensor([float("nan")] + [1.0] * (c - 1)), "non-finite scores"),
    (lambda c: -torch.arange(c, dtype=torch.float64), "negative scores"),
    (lambda c: "high", "not a tensor of scores"),
])
@pytest.mark.parametrize("global_ranking", [False, True])
def test_custom_importance_of_the_wrong_shape_or_values_is_an_error(values, message,
                                                                     global_ranking):
    with pytest.raises(SurgeryError, match=message):
        prune(LeNet(), X, importance=_fixed(values), budget=Budget(ratio=0.5, global_ranking=global_ranking))


def test_custom_importance_list_of_floats_is_accepted():
    got = prune(LeNet(), X, ratio=0.5, importance=_fixed(lambda c: list(range(c, 0, -1)))).plan
    assert got.groups[0].removed_channels == [3, 4, 5]  # the lowest scores go


@pytest.mark.parametrize("ignore", ["conv1", ["conv1"], ("conv1",)])
def test_ignore_takes_a_bare_name_or_module_objects(ignore):
    model = LeNet()
    want = prune(model, X, ratio=0.5, ignore=["conv1"]).plan
    assert prune(model, X, ratio=0.5, ignore=ignore).plan == want
    assert prune(model, X, ratio=0.5, ignore=model.conv1).plan == want
    assert prune(model, X, ratio=0.5, ignore=[model.conv1]).plan == want
    assert not any(m.module == "conv1" and m.removed for g in want.groups for m in g.members)
    assert len(want.groups) == 3  # conv1's group is no longer prunable


def test_ignore_a_module_of_another_model_is_an_error():
    with pytest.raises(SurgeryError, match="not in the model: Conv2d"):
        prune(LeNet(), X, ratio=0.5, ignore=[nn.Conv2d(1, 1, 1)])
