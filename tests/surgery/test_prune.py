"""prune(): semantics of ratio, round_to, importance, inplace, plan and errors."""

import json

import pytest
import torch
import torchvision

from surgery import Budget, SurgeryError, lint, prune
from surgery.io.models import LeNet
from surgery.plan.importance import score
from surgery.plan.plan import channels_to_remove

X = torch.randn(2, 1, 28, 28)


def test_remove_exactly_floor_ratio_times_channels():
    result = prune(LeNet(), X, ratio=0.3)
    assert [(g.channels, len(g.removed_channels)) for g in result.plan.groups] == \
        [(6, 1), (16, 4), (120, 36), (84, 25)]
    assert result.model.conv1.out_channels == 5 and result.model.fc1.in_features == 12 * 16


def test_round_to_rounds_kept_channels_up():
    assert channels_to_remove(120, 0.3, round_to=8) == 32  # keep 84 -> 88
    result = prune(LeNet(), X, budget=Budget(ratio=0.3, round_to=8))
    assert result.model.fc1.out_features == 88 and result.model.conv1.out_channels == 6


def test_at_least_one_channel_is_kept():
    assert channels_to_remove(1, 0.99) == 0 and channels_to_remove(4, 0.99) == 3


def test_l1_removes_the_smallest_filters():
    model = LeNet()
    with torch.no_grad():
        model.conv1.weight.mul_(torch.arange(1, 7).view(6, 1, 1, 1) * 10.0)
    result = prune(model, X, ratio=0.5)
    assert result.plan.groups[0].removed_channels == [0, 1, 2]


def test_criteria_differ_and_unknown_is_refused():
    model = torchvision.models.resnet18()
    from graphs import trace

    group = trace(model, torch.zeros(1, 3, 32, 32)).prunable[1]
    l1, l2 = score(model, group, "l1"), score(model, group, "l2")
    assert l1.shape == l2.shape == (group.channels,) and not torch.allclose(l1, l2)
    with pytest.raises(SurgeryError, match="unknown importance 'l3'"):
        prune(model, torch.zeros(1, 3, 32, 32), ratio=0.5, importance="l3")


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 2, "half"])
def test_bad_ratio_is_refused(ratio):
    with pytest.raises(SurgeryError, match="ratio must be in"):
        prune(LeNet(), X, ratio=ratio)


def test_user_model_untouched_unless_inplace():
    model = LeNet()
    result = prune(model, X, ratio=0.5)
    assert model.conv1.out_channels == 6 and result.model is not model
    same = prune(model, X, ratio=0.5, inplace=True)
    assert same.model is model and model.conv1.out_channels == 3


def test_plan_is_json_serialisable_with_kept_and_removed_per_member():
    plan = prune(LeNet(), X, ratio=0.5).plan.to_json()
    text = json.dumps(plan)
    fc1 = next(m for g in json.loads(text)["groups"] for m in g["members"]
               if m["module"] == "fc1" and m["role"] == "in")
    assert len(fc1["kept"]) == 8 * 16 and len(fc1["removed"]) == 8 * 16
    assert sorted(fc1["kept"] + fc1["removed"]) == list(range(256))


def test_a_forward_that_fails_is_a_surgery_error_naming_the_line():
    class Broken(torch.nn.Module):
        def forward(self, x):
            return x.view(5, 7)

    with pytest.raises(SurgeryError, match=r"test_prune.py:\d+: return x.view\(5, 7\)"):
        prune(Broken(), X, ratio=0.5)


def test_lint_finds_mismatched_layers():
    model = LeNet()
    model.fc2 = torch.nn.Linear(100, 84)
    assert lint(model, X) == ["fc2 (Linear) expects 100 channels on dim 1, gets 120"]
    assert lint(LeNet(), X) == []


@pytest.mark.parametrize("inputs", [X, (X,), [X]], ids=["tensor", "tuple", "list"])
def test_every_budget_reads_example_inputs_the_same_way(inputs):
    """One normaliser (graphs.inputs): a list of inputs works for a MAC target too."""
    by_ratio = prune(LeNet(), inputs, ratio=0.5)
    by_macs = prune(LeNet(), inputs, budget=Budget(target_macs=200_000))
    assert by_ratio.model.conv1.out_channels == 3
    assert by_macs.report(inputs, timing=None).after.macs <= 200_000


def test_taylor_by_name_says_it_needs_batches():
    with pytest.raises(SurgeryError, match="needs \\(inputs, targets\\) batches.*taylor\\(model"):
        prune(LeNet(), X, ratio=0.5, importance="taylor")


def test_importance_that_is_neither_a_name_nor_a_function_is_refused():
    with pytest.raises(SurgeryError, match="must be a name .* or a function"):
        prune(LeNet(), X, ratio=0.5, importance=3)
