"""Recurrent layers (nn.LSTM, nn.GRU, nn.RNN): hidden units prune exactly, by the oracle.

They used to come back 100% unpruned without a word.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphs import trace
from surgery import load, prune, save
from surgery.measure.flops import count_flops
from surgery.rebuild.lint import lint
from surgery.testing.oracle import check, randomize_weights


class Tagger(nn.Module):
    """Embedding -> recurrent layer -> Linear over every position."""

    def __init__(self, cls=nn.LSTM, **options):
        super().__init__()
        self.embed, self.rnn = nn.Embedding(10, 6), cls(6, 8, **options)
        width = options.get("proj_size") or 8
        self.out = nn.Linear(width * (2 if options.get("bidirectional") else 1), 3)

    def forward(self, ids):
        return self.out(self.rnn(self.embed(ids))[0])


CASES = [(nn.LSTM, {}), (nn.GRU, {}), (nn.RNN, {"nonlinearity": "relu"}),
         (nn.LSTM, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
         (nn.LSTM, {"proj_size": 4, "num_layers": 2}),
         (nn.GRU, {"num_layers": 3, "bidirectional": True, "bias": False})]


@pytest.mark.parametrize("cls, options", CASES)
def test_recurrent_units_prune_exactly(cls, options):
    model, x = randomize_weights(Tagger(cls, **options)), torch.randint(0, 10, (5, 2))
    c = check(model, x, 0.5)
    assert c.removed == c.dead and len(c.dead) >= 2 and c.shape_kept
    assert c.error <= 1e-5 and c.output_scale > 1e-6
    rnn = c.result.model.rnn
    assert (rnn.input_size, rnn.hidden_size) == (3, 4)
    assert rnn.proj_size == (2 if options.get("proj_size") else 0)
    assert lint(c.result.model, x) == []


def test_the_units_of_every_layer_and_direction_are_one_group():
    model = Tagger(nn.LSTM, num_layers=2, bidirectional=True)
    units = next(g for g in trace(model, torch.randint(0, 10, (5, 2))).prunable
                 if "out" in g.modules())
    names = {m.attr for m in units.members if m.module == "rnn"}
    assert {"weight_hh_l1_reverse", "bias_ih_l0", "hidden_size"} <= names
    rows = next(m for m in units.members if m.attr == "weight_ih_l0" and m.role == "out")
    assert rows.indices[1] == (1, 9, 17, 25)  # unit 1 in each of the 4 gate blocks


class Seq2Seq(nn.Module):
    """The encoder's final state starts the decoder: their units are coupled."""

    def __init__(self, start_from_literal: bool = False):
        super().__init__()
        self.literal = start_from_literal
        self.encoder, self.decoder = nn.GRU(4, 8, batch_first=True), nn.GRU(4, 8, batch_first=True)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        _, h = self.encoder(x)
        h = torch.zeros(1, x.shape[0], 8) if self.literal else h
        return self.out(self.decoder(x, h)[0])


def test_an_initial_state_couples_the_units_it_starts():
    model, x = randomize_weights(Seq2Seq()), torch.randn(2, 5, 4)
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.error <= 1e-5
    assert c.result.model.encoder.hidden_size == c.result.model.decoder.hidden_size == 4


def test_an_initial_state_of_a_literal_width_blocks_the_units():
    graph = trace(Seq2Seq(start_from_literal=True), torch.randn(2, 5, 4))
    decoder = next(g for g in graph.groups if any(m.attr == "weight_hh_l0" and
                                                  m.module == "decoder" for m in g.members))
    assert not decoder.prunable and "initial state with untraced units" in decoder.reason


def test_recurrent_macs_are_counted_and_shrink():
    model, x = Tagger(nn.LSTM), torch.randint(0, 10, (5, 2))
    before = count_flops(model, x).by_module["rnn"]
    assert before == 10 * (32 * 6 + 32 * 8)  # 10 positions, 4 gates of 8 units
    small = prune(model, x, ratio=0.5).model
    assert count_flops(small, x).by_module["rnn"] == 10 * (16 * 3 + 16 * 4)


def test_a_pruned_recurrent_model_saves_and_loads(tmp_path):
    model, x = randomize_weights(Tagger(nn.LSTM, num_layers=2)), torch.randint(0, 10, (5, 2))
    result = prune(model, x, ratio=0.5)
    save(result, tmp_path / "out")
    loaded = load(tmp_path / "out", Tagger(nn.LSTM, num_layers=2), x)
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model(x), atol=1e-6)
