"""Weight sharing (issue 24): layers called several times and tied weights prune exactly.

A layer called more than once couples every call's input channels into one set (likewise its
outputs); a tensor several modules hold is cut once for all of them and stays shared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from graphs import trace
from graphs.channels import ChannelSets
from graphs.sharing import merge_repeated, shared_tensors
from surgery import load, save
from surgery.rebuild.lint import lint
from surgery.testing.oracle import check, randomize_norms, randomize_weights


def exact(model, x, ratio=0.5):
    """The oracle on ``model`` (random weights and norms, eval mode): every group exact."""
    c = check(randomize_norms(randomize_weights(model)), x, ratio)
    assert c.removed == c.dead and len(c.dead) >= 1 and c.shape_kept
    assert c.error <= 1e-5 and c.output_scale > 1e-6
    assert c.result.params_after < c.result.params_before
    assert lint(c.result.model, x) == []
    return c


def unit(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Siamese(nn.Module):
    """One tower (stem and shared conv) applied to two images; the head reads both outputs."""

    def __init__(self):
        super().__init__()
        self.stem, self.shared, self.head = unit(3, 8), unit(8, 12), nn.Conv2d(24, 4, 1)

    def forward(self, a, b):
        fa, fb = self.shared(self.stem(a)), self.shared(self.stem(b))
        return self.head(torch.cat([fa, fb], 1))


class TwoBranches(nn.Module):
    """One conv applied to the outputs of two different convs: their channels are coupled."""

    def __init__(self):
        super().__init__()
        self.left, self.right, self.shared = unit(3, 8), unit(3, 8), nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.shared(self.left(x)) + self.shared(self.right(x))))


class Loop(nn.Module):
    """A block applied 3 times in a loop, with or without a residual connection."""

    def __init__(self, residual: bool):
        super().__init__()
        self.residual, self.stem, self.head = residual, unit(3, 8), nn.Conv2d(8, 3, 1)
        self.block = nn.Sequential(unit(8, 16), nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8))

    def forward(self, x):
        x = self.stem(x)
        for _ in range(3):
            x = torch.relu(x + self.block(x)) if self.residual else torch.relu(self.block(x))
        return self.head(x)


class SharedHead(nn.Module):
    """A detection-style head applied to every level of a small feature pyramid."""

    def __init__(self):
        super().__init__()
        self.c3, self.c4 = unit(3, 8), unit(8, 16)
        self.lateral3, self.lateral4 = nn.Conv2d(8, 6, 1), nn.Conv2d(16, 6, 1)
        self.head = nn.Sequential(unit(6, 10), nn.Conv2d(10, 5, 1))

    def forward(self, x):
        f3 = self.c3(x)
        f4 = self.c4(nn.functional.max_pool2d(f3, 2))
        return [self.head(self.lateral3(f3)), self.head(self.lateral4(f4))]


class Refine(nn.Module):
    """A recurrent layer applied twice: the second pass refines the first one's output."""

    def __init__(self):
        super().__init__()
        self.embed, self.rnn, self.out = nn.Embedding(10, 8), nn.GRU(8, 8), nn.Linear(8, 3)

    def forward(self, ids):
        h = self.rnn(self.embed(ids))[0]
        return self.out(self.rnn(h)[0])


def test_a_conv_applied_to_two_images_prunes_exactly():
    x = (torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8))
    c = exact(Siamese(), x)
    assert c.result.model.shared[0].out_channels == 6 and c.result.model.head.in_channels == 12
    tower = next(g for g in c.graph.prunable if "head" in g.modules())
    head_in = next(m for m in tower.members if m.module == "head")
    assert head_in.indices[0] == (0, 12)  # channel c of both images: one channel, two positions


def test_a_conv_shared_by_two_branches_couples_them():
    c = exact(TwoBranches(), torch.randn(2, 3, 8, 8))
    group = next(g for g in c.graph.prunable if "shared" in g.modules() and "left.0" in g.modules())
    assert {"left.0", "right.0", "left.1", "right.1"} <= set(group.modules())
    model = c.result.model
    assert model.left[0].out_channels == model.right[0].out_channels == model.shared.in_channels


@pytest.mark.parametrize("residual", [False, True])
def test_a_block_in_a_loop_is_one_stream(residual):
    c = exact(Loop(residual), torch.randn(2, 3, 8, 8))
    stream = next(g for g in c.graph.prunable if "stem.0" in g.modules())
    assert {"block.0.0", "block.1", "block.2", "head"} <= set(stream.modules())
    assert len({(m.module, m.role, m.dim, m.attr) for m in stream.members}) == \
        len(stream.members)  # one member per weight dim, not one per call
    assert c.result.model.block[1].out_channels == c.result.model.block[0][0].in_channels == 4


def test_a_head_shared_by_pyramid_levels_prunes_exactly():
    c = exact(SharedHead(), torch.randn(2, 3, 16, 16))
    model = c.result.model
    widths = (model.lateral3.out_channels, model.lateral4.out_channels, model.head[0][0].in_channels)
    assert widths == (3, 3, 3)
    assert model.head[0][0].out_channels == 5


def test_a_recurrent_layer_applied_twice_prunes_exactly():
    c = exact(Refine(), torch.randint(0, 10, (5, 2)))
    assert c.result.model.rnn.hidden_size == c.result.model.rnn.input_size == 4


def test_calls_of_different_widths_are_blocked_with_the_reason():
    sets = ChannelSets()
    a, b = sets.fresh(4), sets.fresh(3)
    sets.record("fc", "in", 1, a)
    sets.record("fc", "in", 1, b)
    merge_repeated(sets, {"fc": 2})
    assert len(sets.records) == 2 and not sets.same_channels(a[:3], b)
    why = "layer fc is called 2 times with different widths on its in dim 1"
    assert [r for _, r in sets.blocks] == [why, why]
    assert np.array_equal(sets.blocks[0][0], a)


class TinyLM(nn.Module):
    """Embedding -> MLP with a residual -> lm_head tied to the embedding."""

    def __init__(self, vocab=50, width=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.up, self.down = nn.Linear(width, 32), nn.Linear(32, width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        h = self.embed(ids)
        h = h + self.down(torch.relu(self.up(h)))
        return self.lm_head(h)


def test_an_lm_head_tied_to_its_embedding_prunes_once_and_stays_tied(tmp_path):
    ids = torch.randint(0, 50, (2, 7))
    c = exact(TinyLM(), ids)
    stream = next(g for g in c.graph.prunable if "embed" in g.modules())
    assert {m.short() for m in stream.members} >= {"embed.out", "lm_head.in", "up.in", "down.out"}
    model = c.result.model
    assert model.lm_head.weight is model.embed.weight and model.embed.weight.shape == (50, 8)
    assert model.lm_head.in_features == model.embed.embedding_dim == 8
    save(c.result, tmp_path / "out")
    loaded = load(tmp_path / "out", TinyLM(), ids)
    assert loaded.lm_head.weight is loaded.embed.weight
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


class UnusedTie(TinyLM):
    """A second head tied to the embedding that the forward never calls."""

    def __init__(self):
        super().__init__()
        self.spare = nn.Linear(16, 50, bias=False)
        self.spare.weight = self.embed.weight


def test_a_tied_module_the_forward_never_calls_is_cut_with_the_others():
    c = exact(UnusedTie(), torch.randint(0, 50, (2, 7)))
    stream = next(g for g in c.graph.prunable if "embed" in g.modules())
    assert {"embed.out", "lm_head.in", "spare.in"} <= {m.short() for m in stream.members}
    model = c.result.model
    assert model.spare.weight is model.lm_head.weight is model.embed.weight
    assert model.spare.in_features == 8 and lint(model, torch.randint(0, 50, (2, 7))) == []
    assert [s.holders for s in shared_tensors(UnusedTie())] == \
        [(("embed", "weight"), ("lm_head", "weight"), ("spare", "weight"))]


class VocabClassifier(TinyLM):
    """A classifier over the tied head's logits: their vocabulary rows are channels the
    embedding (whose rows are its table, never pruned) does not have."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Linear(50, 3)

    def forward(self, ids):
        return self.cls(torch.relu(super().forward(ids)))


def test_a_tie_its_holders_cannot_cut_alike_blocks_with_the_reason():
    graph = trace(VocabClassifier(), torch.randint(0, 50, (2, 7)))
    vocab = next(g for g in graph.groups if "cls" in g.modules())
    assert not vocab.prunable and vocab.reason == (
        "layer embed shares a parameter with lm_head (tied weights), and embed.weight uses no "
        "channels on its dim 0")
    assert any("embed" in g.modules() and "lm_head" in g.modules() for g in graph.prunable)


class TiedConvs(nn.Module):
    """c3 holds c2's weight and bias, and is never called."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = unit(3, 8), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3)
        self.c3.weight, self.c3.bias = self.c2.weight, self.c2.bias
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.c2(self.c1(x))))


def test_a_module_holding_two_shared_tensors_is_one_member_per_dim():
    c = exact(TiedConvs(), torch.randn(2, 3, 8, 8))
    for group in c.graph.groups:
        keys = [(m.module, m.role, m.dim, m.attr) for m in group.members]
        assert len(keys) == len(set(keys))
    model = c.result.model
    assert model.c3.weight is model.c2.weight and model.c3.bias is model.c2.bias
    assert model.c3.in_channels == model.c3.out_channels == 4
