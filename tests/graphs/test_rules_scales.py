"""A scale made from a channel count (``x / math.sqrt(C)``, ``x * C ** -0.5``, RAFT's
``corr / torch.sqrt(torch.tensor(C))``) changes when those channels are pruned: the group is
marked inexact with the line, where it used to prune silently to another function. A head's
width read for ``q * head_dim ** -0.5`` is left alone: pruning whole heads keeps it."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs import OUT, trace
from surgery import prune
from surgery.testing.oracle import (
    check,
    kill,
    outputs_at,
    randomize_weights,
    relative_error,
)

SCALES = {
    "math.sqrt": lambda h, c: h / math.sqrt(c),
    "power": lambda h, c: h * c ** -0.5,
    "torch.tensor": lambda h, c: h / torch.sqrt(torch.tensor(c)),  # torchvision RAFT
    "divide": lambda h, c: h / c,
    "float": lambda h, c: h * (1.0 / float(c)),
    "new_tensor": lambda h, c: h / h.new_tensor(c).sqrt(),
}


class Correlation(nn.Module):
    """RAFT's correlation volume in small: two feature maps contracted over their channels,
    then scaled by the channel count."""

    def __init__(self, scale) -> None:
        super().__init__()
        self.scale = scale
        self.features, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(16, 2, 1)
        self.pre = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 3, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.features(self.pre(torch.cat([a, b.flip(-1)]))).chunk(2)  # as RAFT
        batch, channels, h, w = fa.shape
        corr = fa.flatten(2).transpose(1, 2) @ fb.flatten(2)  # (batch, hw, hw)
        corr = self.scale(corr, channels)
        return self.head(corr.view(batch, h * w, h, w))


def produced_by(graph, name: str):
    return next(g for g in graph.groups
                if any(m.module == name and m.role == OUT for m in g.members))


@pytest.mark.parametrize("scale", list(SCALES), ids=str)
def test_a_scale_read_from_the_channel_count_marks_the_group_inexact(scale: str) -> None:
    model, x = Correlation(SCALES[scale]).eval(), (torch.randn(1, 3, 4, 4),) * 2
    graph = trace(model, x)
    features = produced_by(graph, "features")
    assert features.prunable and features.inexact.startswith("a scale read from the channel")
    assert "test_rules_scales.py" in features.inexact
    assert not produced_by(graph, "pre.0").inexact  # the rest is untouched


def test_pruning_the_marked_group_changes_the_function() -> None:
    """Why the mark: dead channels still count in the scale, pruned ones do not."""
    model = randomize_weights(Correlation(SCALES["torch.tensor"]))
    x = (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
    group = produced_by(trace(model, x), "features")
    kill(model, group, [0, 3, 5, 6])
    small = prune(model, x, ratio={group.id: 0.5}).model
    assert small.features.out_channels == 4
    error = relative_error(outputs_at(small, x, None)[0], outputs_at(model, x, None)[0])
    assert error > 0.05


def test_the_other_groups_still_prune_exactly() -> None:
    model = randomize_weights(Correlation(SCALES["math.sqrt"]))
    c = check(model, (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)), 0.5)
    assert c.dead and c.removed == c.dead and c.shape_kept and c.output_scale > 1e-3
    assert c.error <= 1e-5
    assert c.result.model.features.out_channels == 8  # inexact: left to an explicit ratio


def test_a_copy_of_a_tensor_with_channels_is_reported() -> None:
    class Copy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.as_tensor(self.a(x)))

    graph = trace(Copy().eval(), torch.randn(1, 3, 4, 4))
    assert [u.op for u in graph.unsupported] == ["as_tensor (copies a tensor's channels)"]
    assert not produced_by(graph, "a").prunable


class HeadScaled(nn.Module):
    """Attention whose heads are the channels, scaled by the head width read from q."""

    def __init__(self, read) -> None:
        super().__init__()
        self.read, self.num_heads = read, 2
        self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (self.read(q) * q) @ k.transpose(-2, -1)
        out = F.softmax(attn, dim=-1) @ v
        return self.proj(out.transpose(1, 2).flatten(2))


@pytest.mark.parametrize("read", [lambda q: q.shape[-1] ** -0.5,
                                  lambda q: 1 / math.sqrt(q.size(-1))], ids=["power", "sqrt"])
def test_a_head_width_scale_is_not_marked_and_heads_prune_exactly(read) -> None:
    model, x = randomize_weights(HeadScaled(read)), torch.randn(2, 5, 8)
    heads = next(g for g in trace(model, x).prunable if g.channels == 2)
    assert not heads.inexact
    c = check(model, x, 0.5)
    assert c.dead and c.removed == c.dead and c.shape_kept and c.error <= 1e-5
    assert c.result.model.num_heads == 1


class SingleHead(nn.Module):
    """One head: the width read for the scale is the channel count itself."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.proj = (nn.Linear(8, 8) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.q(x), self.k(x)
        attn = F.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
        return self.proj(attn @ self.v(x))


def test_a_width_scale_without_heads_is_marked() -> None:
    graph = trace(SingleHead().eval(), torch.randn(2, 5, 8))
    qk = produced_by(graph, "q")
    assert "k" in qk.modules() and qk.prunable
    assert qk.inexact.startswith("a scale read from the channel count")
    assert not produced_by(graph, "v").inexact


@pytest.mark.zoo
def test_raft_small_correlation_scale_is_inexact() -> None:
    """torchvision RAFT small: the feature encoder's output is read for the correlation scale
    (pruned silently before, 35% relative error); now it is marked, the rest prunes exactly."""
    from torchvision.models.optical_flow import raft_small

    model = randomize_weights(raft_small(weights=None))
    x = (torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128))
    c = check(model, x, 0.5)
    encoder = produced_by(c.graph, "feature_encoder.conv")
    assert encoder.prunable and "raft.py" in encoder.inexact
    assert [g.id for g in c.graph.prunable if g.inexact] == [encoder.id]
    assert c.dead and c.removed == c.dead and c.shape_kept and c.error <= 1e-4
