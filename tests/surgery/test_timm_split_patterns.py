"""The timm models whose channel slices and splits are tied to module attributes (issue 11):
GhostNet's ``out[:, :self.out_chs]``, InceptionNeXt's ``torch.split(x, self.split_indexes)`` and
ResNeSt's radix split attention. Built as benchmarks/coverage.py builds them; under ``-m zoo``.
"""

import pytest
import torch

from benchmarks.coverage_models import build, load_entries
from graphs.datamodel import OUT
from surgery.testing.oracle import check

# the SIZE attribute each needs (ghostnet_050's widths are even: its slices keep every channel)
MODELS = {"ghostnet_050": "", "inception_next_atto": "split_indexes", "resnest14d": ""}


@pytest.mark.zoo
@pytest.mark.parametrize("name", sorted(MODELS))
def test_split_patterns_prune_exactly(name):
    torch.set_num_threads(1)
    model, x = build(next(e for e in load_entries() if e["name"] == name))
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.shape_kept and c.output_scale > 1e-6
    assert c.error <= 1e-4
    blocked = {m.module for g in c.graph.groups if not g.prunable for m in g.members
               if m.role == OUT}
    assert all("model input" in g.reason or "model output" in g.reason
               for g in c.graph.groups if not g.prunable), blocked
    if MODELS[name]:
        assert any(m.attr == MODELS[name] for g in c.graph.prunable for m in g.members)
