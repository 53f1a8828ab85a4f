"""Sparsity-regularised training: make channels easy to remove before a prune.

- ``slimming_penalty``: network slimming (Liu et al. 2017), the L1 norm of every BatchNorm scale
  (gamma); channels whose gamma goes to zero then rank last under ``importance="bn_scale"``;
- ``group_lasso_penalty``: the sum over the coupled channels of every prunable group of the L2
  norm of all the weights a channel owns (producers' filters and biases, norms, consumers' input
  slices), so whole channels (not single weights) go to zero together.

``regularized_loss(model, ...)`` gives ``loss_fn(logits, labels, inputs)`` for
``surgery.recover.train.train(loss_fn=...)``: cross-entropy plus the weighted penalties.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    >>> float(slimming_penalty(net).detach())  # gammas start at 1
    2.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphs.datamodel import Group
from graphs.trace import trace
from surgery.plan.saliency import criterion

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def slimming_penalty(model: nn.Module) -> Tensor:
    """``sum |gamma|`` over every affine BatchNorm of ``model`` (0 without any)."""
    total = torch.zeros(())
    for m in model.modules():
        if isinstance(m, BATCH_NORMS) and m.weight is not None:
            total = total + m.weight.abs().sum()
    return total


def group_lasso_penalty(model: nn.Module, groups: tuple[Group, ...], eps: float = 1e-12
                        ) -> Tensor:
    """``sum over groups and channels of sqrt(sum of the channel's squared weights)``.

    ``groups``: the prunable groups of ``model`` (``graphs.trace(model, x).prunable``).

    Example:
        >>> import torch
        >>> from graphs import trace
        >>> net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(1.0), net[1].weight.fill_(2.0)
        >>> groups = trace(net, torch.zeros(1, 2)).prunable  # 2 channels: 2 * sqrt(1 + 1 + 4)
        >>> round(float(group_lasso_penalty(net, groups).detach()), 6)
        4.89898
    """
    squares = {n: p.double().pow(2) for n, p in model.named_parameters() if p.requires_grad}
    per_channel = criterion(squares, "group_lasso")
    total = torch.zeros((), dtype=torch.float64)
    for g in groups:
        total = total + (per_channel(model, g) + eps).sqrt().sum()
    return total.float()


def regularized_loss(model: nn.Module, *, slimming: float = 0.0, group_lasso: float = 0.0,
                     example_inputs: Any = None) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """Cross-entropy + ``slimming * slimming_penalty + group_lasso * group_lasso_penalty``.

    ``example_inputs`` is needed for ``group_lasso`` (to trace the groups once).

    Example:
        >>> loss_fn = regularized_loss(nn.BatchNorm1d(3), slimming=0.5)
        >>> round(float(loss_fn(torch.zeros(1, 3), torch.tensor([0]), None).detach()), 4)
        ... # log 3 + 1.5
        2.5986
    """
    groups = ()
    if group_lasso:
        groups = trace(model, example_inputs).prunable

    def loss_fn(logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
        loss = F.cross_entropy(logits, labels)
        if slimming:
            loss = loss + slimming * slimming_penalty(model)
        if group_lasso:
            loss = loss + group_lasso * group_lasso_penalty(model, groups)
        return loss

    return loss_fn
