"""The oracle check the rule tests share: prune at 0.5 what it killed, exactly, and lint clean."""

from __future__ import annotations

import torch
from torch import nn

from surgery.rebuild.lint import lint
from surgery.testing.oracle import check, randomize_weights


def exact(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The pruned model, after asserting the oracle: removed exactly the dead channels, same
    output shape and output (rel. error <= 1e-5, not vacuous), and lint finds nothing."""
    c = check(randomize_weights(model), x, 0.5)
    assert c.dead and c.removed == c.dead and c.shape_kept and c.output_scale > 1e-3
    assert c.error <= 1e-5, c.error
    assert lint(c.result.model, x) == []
    return c.result.model
