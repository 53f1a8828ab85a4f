"""A channel count the forward compares with a number (diffusers' ``assert hidden_states.shape[1]
== self.channels``), and one attention head as wide as the channels (a VAE's mid block)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from graphs import trace
from surgery import prune
from surgery.rebuild.lint import lint
from surgery.testing.oracle import check, randomize_weights


class Checked(nn.Module):
    """A conv whose forward asserts its input width against an attribute (or a literal)."""

    def __init__(self, literal: bool = False):
        super().__init__()
        self.literal, self.channels = literal, None if literal else 8
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        h = self.a(x)
        assert h.shape[1] == (8 if self.literal else self.channels)
        return self.b(h)


def test_a_compared_width_follows_through_its_attribute():
    model, x = randomize_weights(Checked()), torch.randn(1, 3, 4, 4)
    group = trace(model, x).groups_of("a")[-1]
    assert group.prunable and "channels.size" in [m.short() for m in group.members]
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.error <= 1e-5 and c.result.model.channels == 4


def test_a_width_compared_with_a_literal_blocks_its_channels():
    group = trace(Checked(literal=True), torch.randn(1, 3, 4, 4)).groups_of("a")[-1]
    assert not group.prunable and "the channel count is compared with 8" in group.reason


class OneHead(nn.Module):
    """Single-head attention over the channels: q, k, v are (batch, tokens, channels)."""

    def __init__(self, scale: float | None = None):
        super().__init__()
        self.scale = scale
        self.q, self.k, self.v, self.out = (nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(4, 8),
                                            nn.Linear(8, 4))

    def forward(self, x):
        y = F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x), scale=self.scale)
        return self.out(y)


def test_one_wide_head_prunes_inexactly_by_its_default_scale():
    graph = trace(OneHead(), torch.randn(1, 5, 4))
    qk = graph.groups_of("q")[-1]
    assert qk.prunable and "scales by 1/sqrt of the q/k width" in qk.inexact
    assert {"q", "k"} <= set(qk.modules()) and "v" not in qk.modules()
    small = prune(OneHead(), torch.randn(1, 5, 4), ratio=0.5).model
    assert small.q.out_features == small.k.out_features == 4 and lint(small, torch.randn(1, 5, 4)) == []


def test_one_wide_head_with_a_fixed_scale_prunes_exactly():
    model, x = randomize_weights(OneHead(scale=0.3)), torch.randn(2, 5, 4)
    c = check(model, x, 0.5)
    assert c.removed == c.dead and len(c.dead) == 2 and c.error <= 1e-5
