"""One width per role (surgery.plan.uniform): roles by name pattern, the mean count, re-picked
channels, and the tie of a config that derives the head size from the width."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphs import trace
from graphs.datamodel import IN, OUT, DependencyGraph, Group, Member
from surgery import Budget, prune
from surgery.plan.budget import plan_model
from surgery.plan.importance import resolve
from surgery.plan.plan import plan_group
from surgery.plan.uniform import Tie, make_uniform, role_counts, role_of, tied_counts


class Blocks(nn.Module):
    """Residual MLP blocks whose hidden widths are each one group of one role."""

    def __init__(self, n: int = 3, width: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(width, hidden), nn.ReLU(),
                                                  nn.Linear(hidden, width)) for _ in range(n))
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return self.head(x)


def _blocks() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = Blocks()
    with torch.no_grad():  # layer i's halves score far apart: a global ranking differs
        for i, layer in enumerate(model.layers):
            layer[0].weight[:8].mul_(1 + 5 * i)
    return model, torch.randn(2, 8)


def _group(gid: int, module: str, channels: int, per: int = 1, prunable: bool = True) -> Group:
    rows = tuple(tuple(range(c * per, (c + 1) * per)) for c in range(channels))
    return Group(gid, channels, (Member(module, OUT, 0, rows),), prunable,
                 "" if prunable else "blocked")


def test_roles_join_layers_of_one_name_pattern_and_width():
    a, b = _group(0, "model.layers.0.mlp.up_proj", 16), _group(1, "model.layers.7.mlp.up_proj", 16)
    c = _group(2, "model.layers.7.mlp.up_proj", 8)  # same pattern, another width: its own role
    assert role_of(a) == role_of(b) == (frozenset({"model.layers.*.mlp.up_proj"}), 16)
    assert role_of(c) != role_of(a)
    # the mean of 8 and 3 is 5.5: half up to 6; the lone group keeps its count
    assert role_counts([a, b, c], {0: 8, 1: 3, 2: 5}) == {0: 6, 1: 6, 2: 5}
    assert role_counts([a, b], {0: 8, 1: 3}, round_to=4) == {0: 4, 1: 4}  # keeps 12: 3 x 4


def test_global_ranking_made_uniform_keeps_each_groups_lowest_scored_channels():
    model, x = _blocks()
    graph, l1 = trace(model, x), resolve("l1")
    plan = plan_model(model, graph, Budget(ratio=0.25, global_ranking=True), l1)
    counts = [len(g.removed_channels) for g in plan.groups]
    # the global ranking cuts the low half of the most spread layers first
    assert counts == [0, 4, 8]
    uniform = make_uniform(model, graph, plan, l1)
    common = 4  # the mean
    assert [len(g.removed_channels) for g in uniform.groups] == [common] * len(counts)
    by_id = {g.id: g for g in graph.groups}
    for g in uniform.groups:  # the reference: plan_group's pick at the common count
        group = by_id[g.group]
        assert g == plan_group(group, l1.scores(model, group), common)


def test_prune_uniform_gives_every_block_the_same_width():
    model, x = _blocks()
    result = prune(model, x, budget=Budget(ratio=0.5, global_ranking=True), uniform=True)
    widths = {layer[0].out_features for layer in result.model.layers}
    assert len(widths) == 1 and widths != {16}
    assert torch.isfinite(result.model(x)).all()


def _tied_graph(stream_prunable: bool = True, heads_prunable: bool = True) -> DependencyGraph:
    stream = Group(0, 64, (Member("wte", OUT, 1, tuple((i,) for i in range(64))),
                           Member("h.0.attn.c_attn", IN, 0, tuple((i,) for i in range(64)))),
                   stream_prunable, "" if stream_prunable else "touches the model output")
    heads = [_group(1 + i, f"h.{i}.attn.c_attn", 4, per=48, prunable=heads_prunable)
             for i in range(2)]
    return DependencyGraph((stream, *heads))


@pytest.mark.parametrize("stream,heads,planned,expected", [
    # both prune: the smaller width in whole heads (stream 40 -> 32 = 2 heads of 16)
    (True, True, {0: 24, 1: 1, 2: 1}, {0: 32, 1: 2, 2: 2}),
    # heads keep 3 of 4, stream keeps 60: 48 = 3 heads
    (True, True, {0: 4, 1: 1, 2: 1}, {0: 16, 1: 1, 2: 1}),
    # heads cannot prune (GPT-2's): the stream keeps its width
    (True, False, {0: 32}, {0: 0}),
    # the stream cannot prune (BERT's model output): every head stays
    (False, True, {1: 2, 2: 2}, {1: 0, 2: 0}),
])
def test_a_tie_keeps_the_stream_at_heads_times_head_dim(stream, heads, planned, expected):
    graph = _tied_graph(stream, heads)
    assert tied_counts(graph, planned, Tie("wte", "h.*.attn.c_attn", 16)) == expected


def test_a_tie_that_does_not_fit_the_widths_changes_nothing():
    assert tied_counts(_tied_graph(), {0: 8, 1: 1, 2: 1}, Tie("wte", "h.*.attn.c_attn", 8)) == {}


def _gqa_graph(stream_prunable: bool, kv_groups: int) -> DependencyGraph:
    """Llama's layout: a head group's channel is a key/value head with 2 query heads (x32)."""
    stream = Group(0, 64, (Member("embed_tokens", OUT, 1, tuple((i,) for i in range(64))),),
                   stream_prunable, "" if stream_prunable else "blocked")
    heads = [_group(1 + i, f"layers.{i}.self_attn.q_proj", kv_groups, per=32)
             for i in range(2)]
    return DependencyGraph((stream, *heads))


def test_a_divisible_tie_keeps_the_stream_a_multiple_of_the_query_heads():
    tie = Tie("embed_tokens", "layers.*.self_attn.q_proj", 16, exact=False)
    # stream keeps 42, 4 query heads: 40
    assert tied_counts(_gqa_graph(True, 2), {0: 22, 1: 0, 2: 0}, tie) == {0: 24, 1: 0, 2: 0}
    # a stream of 64 that cannot prune: 3 groups (6 query heads) do not divide it, 2 do
    assert tied_counts(_gqa_graph(False, 3), {1: 0, 2: 0}, tie) == {1: 1, 2: 1}
