"""Check every producer/consumer channel count of a model, like fx's Graph.lint.

Two checks: each layer's size attributes agree with its tensors (``in_channels``,
``num_features``, ...; each kind's ``sizes`` in ``graphs.kinds``), and a real forward on
the example inputs gives every layer function the channels its tensors expect
(``graphs.checks.channel_problems``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> bad = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(4))
    >>> lint(bad, torch.zeros(1, 3, 8, 8))
    ['1 (BatchNorm2d) expects 4 channels on dim 1, gets 8']
"""

from __future__ import annotations

from typing import Any

from torch import nn

from graphs.checks import channel_problems
from graphs.kinds import indexed_tensor, layer_kind


def attribute_problems(model: nn.Module) -> list[str]:
    """Layers whose size attributes disagree with their tensors' shapes.

    Example:
        >>> conv = nn.Conv2d(4, 8, 3)
        >>> conv.out_channels = 6
        >>> attribute_problems(nn.Sequential(conv))
        ['0 (Conv2d): out_channels=6 but its weight says 8']
    """
    problems = []
    for name, m in model.named_modules():
        for attr, actual in _sizes(m):
            if getattr(m, attr) != actual:
                problems.append(f"{name} ({type(m).__name__}): {attr}={getattr(m, attr)} but "
                                f"its weight says {actual}")
    return problems


def _sizes(m: nn.Module) -> list[tuple[str, Any]]:
    """(attribute, the value its tensors imply) for a layer of a known kind (``kind.sizes``)."""
    kind, w = layer_kind(m), indexed_tensor(m)
    if kind is None or (w is None and kind.reference):
        return []
    return kind.sizes(m, w)


def lint(model: nn.Module, example_inputs: Any) -> list[str]:
    """Every inconsistent layer of ``model`` on ``example_inputs``; [] when sound."""
    return attribute_problems(model) or channel_problems(model, example_inputs)
