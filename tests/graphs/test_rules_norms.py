"""Norms with no weights of their own: their sizes (``normalized_shape``, GroupNorm's
``num_channels`` and ``num_groups``) must follow pruning alone.

``nn.LayerNorm(C, elementwise_affine=False)`` (timm qwen3_vit's final norm) calls
``F.layer_norm(x, self.normalized_shape)`` with no weight: no layer member was recorded, so the
channels were pruned while ``normalized_shape`` stayed C and the pruned model failed our own lint
(issue 11). Now the literal shape equal to the module's tuple attribute is a SIZE member; a size
read from the input's own width follows; any other size blocks the channels, with the reason.
Each model holds a prunable hidden width too, so the oracle has something to prune.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs import OUT, trace
from surgery import lint, prune
from surgery.testing.oracle import check, randomize_weights


def hidden(n_in: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, 6), nn.ReLU(), nn.Linear(6, 3))


class AffineFree(nn.Module):
    """Linear -> a norm with no weights -> an MLP, as qwen3_vit's final norm and head."""

    def __init__(self, norm: type = nn.LayerNorm):
        super().__init__()
        self.embed, self.norm, self.out = nn.Linear(4, 8), norm(8, elementwise_affine=False), \
            hidden(8)

    def forward(self, x):
        return self.out(self.norm(self.embed(x)))


class Functional(nn.Module):
    """``F.layer_norm`` with a shape written in forward(): ``size`` picks how."""

    def __init__(self, size: str):
        super().__init__()
        self.size, self.embed, self.other = size, nn.Linear(4, 8), nn.Linear(4, 8)
        self.out, self.skip = hidden(8), hidden(8)

    def forward(self, x):
        y, z = self.embed(x), self.other(x)
        shape = {"own": y.shape[-1:], "literal": (8,), "other": (z.shape[-1],)}[self.size]
        return self.out(F.layer_norm(y, shape)) + self.skip(z)


def group_of(graph, module: str):
    return next(g for g in graph.groups if any(m.module == module and m.role == OUT
                                               for m in g.members))


@pytest.mark.parametrize("norm", [nn.LayerNorm, nn.RMSNorm])
def test_an_affine_free_norm_shape_is_a_size_member(norm):
    model, x = randomize_weights(AffineFree(norm)).eval(), torch.randn(2, 5, 4)
    group = group_of(trace(model, x), "embed")
    assert group.prunable and group.inexact
    assert "norm.normalized_shape.size" in {m.short() for m in group.members}
    result = prune(model, x, ratio=0.5)
    assert result.model.norm.normalized_shape == (4,) and result.model.embed.out_features == 4
    assert lint(result.model, x) == []
    assert result.model(x).shape == model(x).shape


@pytest.mark.parametrize("size, reason", [("own", ""), ("literal", "a literal channel size 8"),
                                          ("other", "a size computed from other dims")])
def test_a_functional_norm_shape_follows_or_blocks(size, reason):
    model, x = randomize_weights(Functional(size)).eval(), torch.randn(2, 5, 4)
    group = group_of(trace(model, x), "embed")
    if not reason:
        assert group.prunable and group.inexact
    else:
        assert not group.prunable and f"normalises over {reason}" in group.reason
    if size == "other":  # the width it was read from is blocked too
        assert not group_of(trace(model, x), "other").prunable
    result = prune(model, x, ratio=0.5)
    assert lint(result.model, x) == []
    assert result.model.embed.out_features == (4 if not reason else 8)


@pytest.mark.parametrize("make", [AffineFree, lambda: Functional("other")])
def test_the_exact_groups_prune_exactly(make):
    c = check(randomize_weights(make()).eval(), torch.randn(2, 5, 4), 0.5)
    assert c.removed == c.dead and c.dead and c.shape_kept
    assert c.error <= 1e-4 and c.output_scale > 1e-6


@pytest.mark.parametrize("groups", [1, 8])
def test_an_affine_free_group_norm_counts_follow(groups):
    """``nn.GroupNorm(8, 8, affine=False)`` kept num_groups=8 for 4 channels: the forward failed."""
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(groups, 8, affine=False),
                          nn.Conv2d(8, 2, 1))
    model, x = randomize_weights(model).eval(), torch.randn(1, 3, 4, 4)
    if groups == 8:  # one group per channel: dead channels stay dead, the oracle applies
        c = check(model, x, 0.5)
        assert c.removed == c.dead and c.dead and c.shape_kept and c.error <= 1e-4
    result = prune(model, x, ratio=0.5)
    norm = result.model[1]
    assert (norm.num_channels, norm.num_groups) == (4, 1 if groups == 1 else 4)
    assert lint(result.model, x) == []


def test_one_group_per_channel_outside_a_group_norm_blocks():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.out = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.out(F.group_norm(self.conv(x), 8))

    group = group_of(trace(Net().eval(), torch.randn(1, 3, 4, 4)), "conv")
    assert not group.prunable and "8 groups, counted by no nn.GroupNorm" in group.reason


@pytest.mark.zoo
def test_timm_qwen3_vit_prunes_and_its_final_norm_follows():
    from benchmarks.coverage_models import build, load_entries

    model, x = build(next(e for e in load_entries() if e["name"] == "qwen3_vit_88m"))
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.dead and c.shape_kept
    assert c.error <= 1e-4 and c.output_scale > 1e-6
    model, x = build(next(e for e in load_entries() if e["name"] == "qwen3_vit_88m"))
    result = prune(model, x, ratio=0.5)
    assert lint(result.model, x) == []
    assert result.model.norm.normalized_shape == (384,) and result.model.head.in_features == 384
