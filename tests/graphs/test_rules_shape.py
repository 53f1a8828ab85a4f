"""Channel slices and splits whose literal sizes are module attributes (GhostNet, InceptionNeXt,
ResNeSt patterns), each on a small hand-written model, checked with the exactness oracle."""

import torch
from torch import nn

from graphs import SIZE, trace
from surgery import load, prune, save
from surgery.testing.oracle import check, randomize_norms


def exact(model, x, ratio=0.5):
    c = check(randomize_norms(model.eval()), x, ratio)
    assert c.removed == c.dead and c.shape_kept and c.output_scale > 1e-6
    assert c.error <= 1e-4
    return c.graph, c.result


class Ghost(nn.Module):
    """GhostNet's module: cat of a conv and its depthwise copy, then the first ``out_chs``."""

    def __init__(self, out_chs=5, stop=None):
        super().__init__()
        init = (out_chs + 1) // 2
        self.out_chs, self.stop = out_chs, stop
        self.primary = nn.Sequential(nn.Conv2d(3, init, 1), nn.BatchNorm2d(init), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(init, init, 3, padding=1, groups=init),
                                   nn.BatchNorm2d(init), nn.ReLU())
        self.head = nn.Conv2d(min(stop or out_chs, 2 * init), 4, 1)

    def forward(self, x):
        x1 = self.primary(x)
        out = torch.cat([x1, self.cheap(x1)], dim=1)
        return self.head(out[:, :self.out_chs if self.stop is None else self.stop, :, :])


def test_prefix_slice_by_an_attribute_prunes_and_updates_it():
    graph, result = exact(Ghost(out_chs=5), torch.randn(2, 3, 6, 6))
    sizes = [m for g in graph.prunable for m in g.members if m.role == SIZE]
    assert {(m.module, m.attr) for m in sizes} == {("", "out_chs")}
    # channel 2 of the conv feeds positions 2 and 5 of the cat; 5 is sliced off, so it is a
    # group of its own, and out_chs counts the kept positions of both groups
    assert sorted(len(m.indices[0]) for m in sizes) == [1, 2]
    model = result.model
    assert model.out_chs == model.head.in_channels < 5
    assert model.primary[0].out_channels == model.cheap[0].out_channels


def test_prefix_slice_past_the_end_or_by_a_bare_literal():
    graph, _ = exact(Ghost(out_chs=6, stop=8), torch.randn(2, 3, 6, 6))  # keeps every channel
    assert graph.groups_of("primary.0")[-1].prunable

    class Four(Ghost):
        def forward(self, x):
            x1 = self.primary(x)
            return self.head(torch.cat([x1, self.cheap(x1)], dim=1)[:, :4])

    model = Four(out_chs=6, stop=4)  # head of 4 inputs
    model.stop = None  # no int attribute of the module says 4
    graph = trace(model, torch.randn(2, 3, 6, 6))
    blocked = graph.groups_of("primary.0")[-1]
    assert not blocked.prunable and "keeps the first 4 channels" in blocked.reason \
        and "test_rules_shape.py" in blocked.reason


class InceptionDW(nn.Module):
    """InceptionNeXt's token mixer: split by a tuple attribute, depthwise convs, cat back."""

    def __init__(self, dim=16, gc=4):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 1)
        self.hw = nn.Conv2d(gc, gc, 3, padding=1, groups=gc)
        self.w = nn.Conv2d(gc, gc, (1, 3), padding=(0, 1), groups=gc)
        self.split_indexes = (dim - 2 * gc, gc, gc)
        self.norm, self.head = nn.BatchNorm2d(dim), nn.Conv2d(dim, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        x_id, x_hw, x_w = torch.split(x, self.split_indexes, dim=1)
        y = torch.cat((x_id, self.hw(x_hw), self.w(x_w)), dim=1)
        return self.head(self.norm(y) + x)


def test_split_by_a_tuple_attribute_prunes_each_piece():
    graph, result = exact(InceptionDW(), torch.randn(2, 3, 6, 6))
    stem = [g for g in graph.groups_of("stem") if g.prunable]
    assert sorted(g.channels for g in stem) == [4, 4, 8]
    assert sorted(m.dim for g in stem for m in g.members if m.role == SIZE) == [0, 1, 2]
    model = result.model
    assert model.split_indexes == (4, 2, 2)
    assert (model.hw.out_channels, model.w.out_channels, model.stem.out_channels) == (2, 2, 8)


def test_split_by_literal_sizes_that_no_attribute_holds_still_blocks():
    class Literal(InceptionDW):
        def forward(self, x):
            x_id, x_hw, x_w = torch.split(self.stem(x), (8, 4, 4), dim=1)
            return self.head(torch.cat((x_id, self.hw(x_hw), self.w(x_w)), dim=1))

    model = Literal()
    model.split_indexes = (9, 4, 3)  # no longer the sizes forward() writes
    graph = trace(model, torch.randn(2, 3, 6, 6))
    assert not graph.groups_of("stem")[-1].prunable
    assert "fixed sizes [8, 4, 4]" in graph.groups_of("stem")[-1].reason


def test_pruned_split_model_prunes_again():
    model = prune(InceptionDW(), torch.randn(2, 3, 6, 6), ratio=0.5).model
    again = prune(model, torch.randn(2, 3, 6, 6), ratio=0.5).model
    assert again.split_indexes == (2, 1, 1) and again(torch.randn(1, 3, 6, 6)).shape[1] == 4


def test_sliced_attribute_value_is_saved_and_loaded(tmp_path):
    result = prune(Ghost(out_chs=5), torch.randn(2, 3, 6, 6), ratio=0.5)
    save(result, tmp_path / "ghost")
    small = load(tmp_path / "ghost", Ghost(out_chs=5))
    assert small.out_chs == result.model.out_chs
    x = torch.randn(1, 3, 6, 6)
    assert torch.allclose(small.eval()(x), result.model.eval()(x), atol=1e-5)
