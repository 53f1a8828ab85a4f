"""The exactness oracle on every supported family: dead channels are pruned, output unchanged."""

import pytest
import torch

from benchmarks.builders import build_model
from surgery import prune
from surgery.testing.oracle import check

FAMILIES = [
    ("lenet", (2, 1, 28, 28)),
    ("vgg11", (2, 3, 32, 32)),
    ("vgg11_bn", (2, 3, 32, 32)),
    ("resnet18", (2, 3, 64, 64)),
    ("resnet50", (2, 3, 64, 64)),
    ("mobilenet_v2", (2, 3, 64, 64)),
    ("densenet121", (2, 3, 64, 64)),
]


def build(name):
    return build_model(name, norms=True)


def check_exact(model, x, ratio, seed=0):
    c = check(model, x, ratio, seed=seed)
    assert c.removed == c.dead, "prune must remove exactly the dead channels"
    assert c.shape_kept and c.output_scale > 1e-3
    assert c.error <= 1e-4
    assert c.result.params_after < c.result.params_before
    return c.graph, c.result


@pytest.mark.parametrize("name,shape", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_pruned_output_equals_original_with_dead_channels(name, shape):
    model = build(name)
    x = torch.randn(*shape)
    graph, result = check_exact(model, x, ratio=0.5)
    for group in graph.prunable:  # floor(ratio * C) of every prunable group, no more
        assert len(result.plan.groups[[g.group for g in result.plan.groups].index(group.id)]
                   .removed_channels) == group.channels // 2


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.75])
def test_exact_at_other_ratios_on_resnet18(ratio):
    check_exact(build("resnet18"), torch.randn(1, 3, 32, 32), ratio, seed=int(ratio * 10))


def test_models_in_train_mode_are_left_in_train_mode():
    model = build("resnet18").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune(model, torch.randn(2, 3, 32, 32), ratio=0.5)
    assert model.training and result.model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
