"""Tests for surgery.recover.at_init: pruning before training from accumulated saliency."""

from __future__ import annotations

import torch

from surgery import Budget
from surgery.io.models import LeNet
from surgery.plan.taylor import taylor
from surgery.prune import prune
from surgery.recover.at_init import prune_at_init

X = torch.zeros(1, 1, 28, 28)


def data(n: int = 2):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g))
            for _ in range(n)]


def test_at_init_snip_style_matches_prune_with_taylor():
    torch.manual_seed(0)
    model = LeNet()
    ours = prune_at_init(model, X, data(), "taylor", ratio=0.5)
    reference = prune(model, X, ratio=0.5, importance=taylor(model, data()))
    assert [g.removed_channels for g in ours.plan.groups] == \
        [g.removed_channels for g in reference.plan.groups]
    assert ours.plan.importance == "taylor"


def test_at_init_seven_prunes_and_reaches_target_macs():
    torch.manual_seed(0)
    result = prune_at_init(LeNet(), X, data(), "seven",
                           budget=Budget(target_macs=100_000, global_ranking=True))
    assert 98_000 <= result.report(X, timing=None).after.macs <= 100_000
