"""Parametrized weights: weight_norm (both APIs) prunes exactly, spectral_norm inexactly (with
its reason). Such layers used to come back unpruned without a word."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from graphs import trace
from surgery import load, prune, save
from surgery.rebuild.lint import lint
from surgery.testing.oracle import check, randomize_weights


def old_weight_norm(layer: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(layer)


WRAPS = {"weight_norm": parametrizations.weight_norm, "old weight_norm": old_weight_norm}


def net(wrap) -> nn.Module:
    return nn.Sequential(wrap(nn.Conv2d(3, 8, 3)), nn.ReLU(), wrap(nn.Conv2d(8, 8, 3, groups=8)),
                         wrap(nn.Conv2d(8, 6, 1)), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), wrap(nn.Linear(6, 5)), nn.Tanh(), nn.Linear(5, 2))


@pytest.mark.parametrize("name", sorted(WRAPS))
def test_weight_norm_prunes_exactly(name):
    model, x = randomize_weights(net(WRAPS[name])), torch.randn(2, 3, 10, 10)
    graph = trace(model, x)
    assert not graph.unsupported and len(graph.prunable) == 3
    c = check(model, x, 0.5)
    assert c.removed == c.dead and len(c.dead) == 3 and c.shape_kept
    assert c.error <= 1e-5 and c.output_scale > 1e-6
    small = c.result.model
    assert (small[0].out_channels, small[3].out_channels, small[7].out_features) == (4, 3, 3)
    assert lint(small, x) == []


def test_a_weight_normed_model_saves_and_loads(tmp_path):
    model, x = randomize_weights(net(parametrizations.weight_norm)), torch.randn(2, 3, 10, 10)
    result = prune(model, x, ratio=0.5)
    assert parametrize.is_parametrized(result.model[0], "weight")
    save(result, tmp_path / "out")
    loaded = load(tmp_path / "out", net(parametrizations.weight_norm), x)
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model(x), atol=1e-6)


def test_spectral_norm_prunes_inexactly_with_its_reason():
    model = randomize_weights(net(parametrizations.spectral_norm))
    x = torch.randn(2, 3, 10, 10)
    graph = trace(model, x)
    assert not graph.unsupported and len(graph.prunable) == 3
    assert all("largest singular value (spectral_norm)" in g.inexact for g in graph.prunable)
    small = prune(model, x, ratio=0.5).model
    sn = small[0].parametrizations.weight[0]
    assert (small[0].out_channels, sn._u.shape[0]) == (4, 4)
    assert small[3].parametrizations.weight[0]._v.shape[0] == 4  # 1x1 kernel, 4 of 8 inputs
    assert small(x).shape == (2, 2) and lint(small, x) == []
