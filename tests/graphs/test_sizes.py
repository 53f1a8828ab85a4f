"""A size read from one tensor's channel count and written for another's (graphs/sizes.py).

``B, N, C = x.shape`` and then a reshape or split of *another* tensor by ``C`` ties that tensor's
channel count to x's, which no element coupling expresses: both are blocked, x included (its
width is read). Before, only the reshaped tensor was blocked, so x's channels were pruned and the
pruned model failed (timm convit_tiny, edgenext_xx_small, pvt_v2_b0: issue 11). Each model holds
a prunable hidden width too, so the oracle has something to prune.
"""

import pytest
import torch
from torch import nn

from graphs import OUT, trace
from surgery import lint, prune
from surgery.testing.oracle import check, randomize_weights

READ = "read from these channels"


def hidden(n_in: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, 6), nn.ReLU(), nn.Linear(6, 3))


class HeadDimFromStream(nn.Module):
    """convit's GPSA: the head width of qk is the stream's width over the head count."""

    def __init__(self):
        super().__init__()
        self.num_heads = 2
        self.embed, self.qk, self.out, self.skip = nn.Linear(4, 8), nn.Linear(8, 16), \
            hidden(8), hidden(8)

    def forward(self, x):
        x = self.embed(x)
        B, N, C = x.shape
        qk = self.qk(x).reshape(B, N, 2, self.num_heads, C // self.num_heads)
        return self.out(qk.sum(2).flatten(2)) + self.skip(x)


class MergeToStreamWidth(nn.Module):
    """edgenext's XCA and pvt_v2's attention: heads merged back with ``reshape(B, N, C)``."""

    def __init__(self):
        super().__init__()
        self.num_heads = 2
        self.embed, self.v, self.out, self.skip = nn.Linear(4, 8), nn.Linear(8, 8), \
            hidden(8), hidden(8)

    def forward(self, x):
        x = self.embed(x)
        B, N, C = x.shape
        v = self.v(x).reshape(B, N, self.num_heads, -1)
        return self.out(v.reshape(B, N, C)) + self.skip(x)


class ReducedKeepsStreamWidth(nn.Module):
    """pvt_v2's spatial reduction: ``self.sr(x).reshape(B, C, -1)`` with C the stream's."""

    def __init__(self):
        super().__init__()
        self.embed, self.sr, self.out, self.skip = nn.Linear(4, 8), nn.Conv2d(8, 8, 2, 2), \
            hidden(8), hidden(8)

    def forward(self, x):  # x: (B, 16, 4), 16 = 4 x 4 tokens
        x = self.embed(x)
        B, _, C = x.shape
        y = self.sr(x.transpose(1, 2).reshape(B, C, 4, 4)).reshape(B, C, -1).transpose(1, 2)
        return self.out(y.mean(1)) + self.skip(x.mean(1))


class SplitByStreamWidth(nn.Module):
    """A split of one tensor by a size read from another's channel count."""

    def __init__(self):
        super().__init__()
        self.embed, self.wide, self.out, self.skip = nn.Linear(4, 8), nn.Linear(8, 8), \
            hidden(4), hidden(8)

    def forward(self, x):
        x = self.embed(x)
        a, b = self.wide(x).split(x.shape[-1] // 2, dim=-1)
        return self.out(a * b) + self.skip(x)


class SliceByStreamWidth(nn.Module):
    """A slice of one tensor's channels at a bound read from another's channel count."""

    def __init__(self):
        super().__init__()
        self.embed, self.wide, self.out, self.skip = nn.Linear(4, 8), nn.Linear(8, 16), \
            hidden(8), hidden(8)

    def forward(self, x):
        x = self.embed(x)
        return self.out(self.wide(x)[..., :x.shape[-1]]) + self.skip(x)


MODELS = [HeadDimFromStream, MergeToStreamWidth, ReducedKeepsStreamWidth, SplitByStreamWidth,
          SliceByStreamWidth]


@pytest.mark.parametrize("make", MODELS, ids=lambda m: m.__name__)
def test_the_channels_a_size_is_read_from_are_blocked(make):
    graph = trace(make().eval(), torch.randn(1, 16, 4))
    stream = next(g for g in graph.groups
                  if any(m.module == "embed" and m.role == OUT for m in g.members))
    assert not stream.prunable and READ in stream.reason, stream.reason


@pytest.mark.parametrize("make", MODELS, ids=lambda m: m.__name__)
def test_the_rest_prunes_exactly_and_the_pruned_model_runs(make):
    torch.manual_seed(0)
    model, x = randomize_weights(make().eval()), torch.randn(1, 16, 4)
    c = check(model, x, 0.5)
    assert c.dead and c.removed == c.dead, (c.dead, c.removed)
    assert c.shape_kept and c.output_scale > 1e-6 and c.error <= 1e-4, c.error
    assert lint(prune(make().eval(), x, ratio=0.5).model, x) == []


class HeadsByAttribute(nn.Module):
    """Heads counted by a module attribute inside view/reshape, the head width written
    ``C // self.num_heads`` with C the reshaped tensor's own width, or -1."""

    def __init__(self, head_dim: str):
        super().__init__()
        self.num_heads, self.head_dim = 2, head_dim
        self.embed, self.q, self.out = nn.Linear(4, 8), nn.Linear(8, 8), hidden(8)

    def forward(self, x):
        q = self.q(torch.relu(self.embed(x)))
        B, N, C = q.shape
        if self.head_dim == "computed":
            heads = q.view(B, N, self.num_heads, C // self.num_heads)
        else:
            heads = q.reshape(B, N, self.num_heads, -1)
        return self.out(torch.relu(heads * 2).flatten(2))


@pytest.mark.parametrize("head_dim", ["computed", "inferred"])
def test_heads_counted_by_an_attribute_prune_exactly(head_dim):
    graph = trace(HeadsByAttribute(head_dim).eval(), torch.randn(1, 16, 4))
    heads = next(g for g in graph.groups if g.channels == 2)
    assert heads.prunable and [m.short() for m in heads.members] == \
        ["q.out x4", "num_heads.size", "out.0.in x4"]
    model, x = randomize_weights(HeadsByAttribute(head_dim).eval()), torch.randn(1, 16, 4)
    c = check(model, x, 0.5)
    assert c.dead and c.removed == c.dead and c.shape_kept and c.error <= 1e-5
    assert c.result.model.num_heads == 1 and lint(c.result.model, x) == []
