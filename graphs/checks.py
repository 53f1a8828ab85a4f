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
import torch.nn.functional as F
from torch import nn

from graphs.capture import capture
from graphs.errors import TraceError
from graphs.rules_layers import CONV_TRANSPOSES, CONVS


def _expected(func: Any, args: tuple, kwargs: dict) -> tuple[int, int] | None:
    """(input dim, channel count) a layer function expects, from its own tensors."""
    def get(i: int, name: str) -> Any:
        return args[i] if len(args) > i else kwargs.get(name)
    if func in CONVS:
        w, groups = get(1, "weight"), get(6, "groups") or 1
        return (1, w.shape[1] * groups) if isinstance(w, torch.Tensor) else None
    if func in CONV_TRANSPOSES:
        w = get(1, "weight")
        return (1, w.shape[0]) if isinstance(w, torch.Tensor) else None
    if func is F.linear:
        return -1, get(1, "weight").shape[-1]
    if func is F.batch_norm:
        t = next((t for t in (get(1, "running_mean"), get(3, "weight")) if t is not None), None)
        return (1, t.shape[0]) if t is not None else None
    if func is F.group_norm:
        w = get(2, "weight")
        return (1, w.shape[0]) if w is not None else None
    if func in (F.layer_norm, F.rms_norm):
        return -1, tuple(get(1, "normalized_shape"))[-1]
    return None


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
        want = _expected(func, args, kwargs)
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
