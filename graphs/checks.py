"""Channel checks on a real forward: does every layer function get the channels it expects?

``channel_problems`` runs the model once under ``graphs.capture`` (convolutions by shape only)
and, before each layer function (conv, linear, batch/group/layer norm), compares the input's
channel count with the layer's tensors. The first mismatch torch itself would raise on stops the
run; the problems found up to there are returned, worded with the module that made the call.

Example:
    >>> import torch
    >>> from torch import nn
    >>> bad = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(4))
    >>> channel_problems(bad, torch.zeros(1, 3, 8, 8))
    ['1 (BatchNorm2d) expects 4 channels on dim 1, gets 8']
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphs.capture import capture
from graphs.errors import TraceError
from graphs.kinds import function_kind


def fit_channels(x: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """Trim or zero-pad ``x`` to ``count`` along ``dim`` so checking can go on past a mismatch.

    Example:
        >>> fit_channels(torch.ones(1, 3), 5, 1).tolist(), fit_channels(torch.ones(1, 3), 2, 1).shape
        ([[1.0, 1.0, 1.0, 0.0, 0.0]], torch.Size([1, 2]))
    """
    if x.shape[dim] >= count:
        return x.narrow(dim, 0, count)
    shape = list(x.shape)
    shape[dim] = count - x.shape[dim]
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def channel_problems(model: nn.Module, example_inputs: Any) -> list[str]:
    """Every layer call whose input channels differ from what its tensors expect; [] if sound."""
    problems: list[str] = []

    def check(func: Any, args: tuple, kwargs: dict, module: str) -> tuple | None:
        kind = function_kind(func)
        want = kind.expects(args, kwargs) if kind is not None and kind.expects else None
        x = args[0] if args else None
        if want is None or not isinstance(x, torch.Tensor) or x.dim() == 0:
            return None
        dim, count = want
        if x.shape[dim] == count:
            return None
        kind = type(model.get_submodule(module)).__name__
        problems.append(f"{module or 'model'} ({kind}) expects {count} channels on dim "
                        f"{dim % x.dim()}, gets {x.shape[dim]}")
        return (fit_channels(x, count, dim), *args[1:])

    try:
        capture(model, example_inputs, check=check)
    except TraceError as exc:
        if not problems:
            problems.append(f"running the model fails: {exc}")
    return problems
