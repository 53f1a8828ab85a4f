"""Mixtures of experts with 3-d expert parameters: each expert's hidden units prune exactly, the
router keeps its outputs (they used to keep 95-98% of their parameters, without a word)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphs import trace
from surgery.rebuild.lint import lint
from surgery.testing.oracle import check, randomize_weights


class GroupedExperts(nn.Module):
    """A router picks one of 4 experts per token; experts run as one grouped matmul."""

    def __init__(self, loop: bool = False):
        super().__init__()
        self.loop = loop
        self.embed, self.router = nn.Linear(8, 16), nn.Linear(16, 4, bias=False)
        self.up = nn.Parameter(torch.randn(4, 32, 16))
        self.down = nn.Parameter(torch.randn(4, 16, 32))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        expert = self.router(h).argmax(-1)
        if self.loop:
            out = torch.zeros_like(h)
            for e in range(4):
                rows = torch.where(expert == e)[0]
                y = nn.functional.linear(nn.functional.relu(nn.functional.linear(
                    h[rows], self.up[e])), self.down[e])
                out = out.index_add(0, rows, y)
        else:
            order = expert.argsort()
            offs = torch.bincount(expert, minlength=4).cumsum(0).to(torch.int32)
            y = torch._grouped_mm(h[order], self.up.transpose(-2, -1), offs=offs).relu()
            y = torch._grouped_mm(y, self.down.transpose(-2, -1), offs=offs)
            out = torch.empty_like(y).index_copy(0, order, y)
        return self.head(h + out)


@pytest.mark.parametrize("loop", [False, True])
def test_expert_units_prune_exactly(loop):
    model, x = randomize_weights(GroupedExperts(loop)), torch.randn(12, 8)
    graph = trace(model, x)
    units = next(g for g in graph.prunable
                 if any(m.attr == "up" and m.role == "out" for m in g.members))
    assert units.channels == 32 and not units.inexact
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.shape_kept and c.error <= 1e-5 and c.output_scale > 1e-6
    small = c.result.model
    assert small.embed.out_features == 8  # the stream through the experts prunes too
    assert tuple(small.up.shape) == (4, 16, small.embed.out_features)
    assert tuple(small.down.shape) == (4, small.embed.out_features, 16)
    assert small.router.out_features == 4  # the router keeps every expert
    assert lint(small, x) == []


def mixtral(implementation: str):
    transformers = pytest.importorskip("transformers")
    config = transformers.MixtralConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=64, tie_word_embeddings=False,
        experts_implementation=implementation)
    return randomize_weights(transformers.MixtralForCausalLM(config))


@pytest.mark.parametrize("implementation", ["grouped_mm", "eager"])
def test_mixtral_experts_prune_exactly(implementation):
    model = mixtral(implementation)
    x = {"input_ids": torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0)),
         "use_cache": False}
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.shape_kept and c.error <= 1e-5
    experts = c.result.model.model.layers[0].mlp.experts
    assert tuple(experts.gate_up_proj.shape) == (4, 64, 32)  # 32 of 64 units, gate and up
    assert tuple(experts.down_proj.shape) == (4, 32, 32)


def test_qwen2_moe_with_a_shared_expert_prunes_exactly():
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2MoeConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
        shared_expert_intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=64, tie_word_embeddings=False)
    model = randomize_weights(transformers.Qwen2MoeForCausalLM(config))
    x = {"input_ids": torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0)),
         "use_cache": False}
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.shape_kept and c.error <= 1e-5
    mlp = c.result.model.model.layers[0].mlp
    assert tuple(mlp.experts.gate_up_proj.shape) == (4, 32, 32)
    assert mlp.shared_expert.up_proj.out_features == 32
    assert mlp.gate.weight.shape[0] == 4  # the router keeps every expert
