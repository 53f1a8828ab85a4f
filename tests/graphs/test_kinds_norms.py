"""GroupNorm with 1 < G < C (whole groups go) and InstanceNorm (per channel): exact, by the oracle.

A diffusion UNet or a VAE has ``nn.GroupNorm(32, C)`` after nearly every conv; these norms used
to block every channel they touched, and the model came back unpruned.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphs import trace
from surgery import prune
from surgery.rebuild.lint import lint
from surgery.testing.oracle import check, randomize_weights


class GroupNormNet(nn.Module):
    """conv -> GroupNorm(4, 16) -> SiLU -> conv, twice, with a residual add around the second."""

    def __init__(self, affine: bool = True):
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16, affine=affine)
        self.c2, self.n2 = nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16, affine=affine)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        x = torch.nn.functional.silu(self.n1(self.c1(x)))
        return self.head(x + torch.nn.functional.silu(self.n2(self.c2(x))))


def test_group_norm_groups_are_the_channels():
    graph = trace(GroupNormNet().eval(), torch.randn(1, 3, 8, 8))
    stream = next(g for g in graph.groups if "n1" in g.modules())
    assert stream.prunable and not stream.inexact and stream.channels == 4
    c1 = next(m for m in stream.members if m.module == "c1")
    assert c1.indices[1] == (4, 5, 6, 7)  # group 1 owns channels 4..7 of c1's output


@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_whole_groups_prune_exactly(affine):
    model, x = randomize_weights(GroupNormNet(affine)), torch.randn(2, 3, 8, 8)
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.dead and c.shape_kept
    assert c.error <= 1e-5 and c.output_scale > 1e-6
    small = c.result.model
    assert (small.n1.num_groups, small.n1.num_channels, small.c1.out_channels) == (2, 8, 8)
    assert lint(small, x) == []


@pytest.mark.parametrize("norm", [
    lambda: nn.InstanceNorm2d(8),  # no tensors: num_features must follow alone
    lambda: nn.InstanceNorm2d(8, affine=True),
    lambda: nn.InstanceNorm2d(8, affine=True, track_running_stats=True),
])
def test_instance_norm_prunes_exactly(norm):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), norm(), nn.ReLU(), nn.Conv2d(8, 2, 1))
    model, x = randomize_weights(model), torch.randn(2, 3, 8, 8)
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.dead and c.shape_kept
    assert c.error <= 1e-5 and c.output_scale > 1e-6
    assert c.result.model[1].num_features == 4
    assert lint(c.result.model, x) == []


def test_a_diffusers_style_block_is_mostly_pruned():
    """The issue's case: a CNN whose convs all feed nn.GroupNorm(8, 64) came back 100% unpruned."""
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
                          nn.Conv2d(64, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
                          nn.Conv2d(64, 10, 1))
    result = prune(model, torch.randn(1, 3, 16, 16), ratio=0.5)
    assert result.params_after < 0.45 * result.params_before
