"""A literal size must equal an attribute of the module that calls the op, never of a parent:
Phi-3's attention slices q at ``config.heads * head_dim``, which equals its decoder layer's
``hidden_size`` but does not follow it (the pruned model failed lint)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from graphs import trace
from surgery import prune
from surgery.rebuild.lint import lint


class Attention(nn.Module):
    """Slices q and k at a width read from a config object, not from an int attribute."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(heads=2, head_dim=4)
        self.qkv, self.out = nn.Linear(8, 16), nn.Linear(8, 8)

    def forward(self, x):
        qkv = self.qkv(x)
        width = self.config.heads * self.config.head_dim
        return self.out(qkv[..., :width] * qkv[..., width:])


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden_size, self.attn = 8, Attention()  # hidden_size equals the q width

    def forward(self, x):
        return x + self.attn(x)


def test_a_parents_attribute_of_the_same_value_is_not_taken():
    model, x = Layer(), torch.randn(1, 3, 8)
    graph = trace(model, x)
    assert not any(m.attr == "hidden_size" for g in graph.groups for m in g.members)
    assert not graph.groups_of("attn.qkv")[-1].prunable  # the literal slice blocks q/k
    assert lint(prune(model, x, ratio=0.5).model, x) == []
