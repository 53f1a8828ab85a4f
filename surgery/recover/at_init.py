"""Prune before training (SEVENpre): rank channels by a saliency read from a few batches.

``prune_at_init`` scores the untrained model with ``surgery.plan.saliency.accumulate`` (no
training step: eval mode, ``.grad`` fields restored) and prunes from those scores; train the
result afterwards. With ``importance="taylor"`` it is SNIP's connection sensitivity summed per
channel.

Example:
    >>> import torch
    >>> from surgery.io.models import LeNet
    >>> data = [(torch.randn(8, 1, 28, 28), torch.arange(8))] * 2
    >>> result = prune_at_init(LeNet(), torch.zeros(1, 1, 28, 28), data, ratio=0.5)
    >>> result.plan.importance, result.model.conv1.out_channels
    ('seven', 3)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from surgery.plan.saliency import accumulate, criterion
from surgery.prune import PruneResult, prune


def prune_at_init(model: nn.Module, example_inputs: Any, batches: Iterable,
                  importance: str = "seven", *, max_batches: int | None = 8,
                  **prune_options: Any) -> PruneResult:
    """Prune before training (SEVENpre; SNIP-style with ``importance="taylor"``).

    Scores come from ``accumulate`` over the first ``max_batches`` batches; ``prune_options``
    go to ``prune`` (``ratio``, ``budget``, ``inplace``, ...).

    Example:
        >>> import torch
        >>> from surgery.io.models import LeNet
        >>> data = [(torch.randn(8, 1, 28, 28), torch.arange(8))]
        >>> prune_at_init(LeNet(), torch.zeros(1, 1, 28, 28), data, "taylor",
        ...               ratio=0.25).model.fc1.out_features
        90
    """
    totals = accumulate(model, batches, importance, max_batches=max_batches)
    return prune(model, example_inputs, importance=criterion(totals, importance),
                 **prune_options)
