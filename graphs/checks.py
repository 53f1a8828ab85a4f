"""Channel checks on a real forward: does every layer function get the channels it expects?

``channel_problems`` runs the model once (convolutions, linear layers and batch norms by shape
only, ``graphs.fastconv``) and, before each layer function (conv, linear, batch/group/layer
norm), compares the input's channel count with the layer's tensors. A sound model is checked
by a bare run that records nothing (``ChannelCheck``); only when it finds a mismatch, or the
model fails, does the run repeat under ``graphs.capture`` to word each problem with the module
that made the call. The first mismatch torch itself would raise on stops that run; the
problems found up to there are returned.

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
from torch.overrides import TorchFunctionMode

from graphs.capture import capture
from graphs.errors import TraceError
from graphs.fastconv import batch_norm_view, bound_args, fast_call
from graphs.inputs import split_inputs
from graphs.kinds import LAYER_FUNCTIONS, function_kind
from graphs.modes import eval_runner

RUN_FAILS = "running the model fails: "
"""How ``channel_problems`` begins the one problem it reports when the model fails to run
without a channel mismatch (the inputs do not fit it, or its forward raises)."""


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


def mismatch(func: Any, args: tuple, kwargs: dict) -> tuple[int, int] | None:
    """(dim, count) when ``func`` is a layer function whose input does not have the ``count``
    channels its tensors expect along ``dim``, else None.

    Example:
        >>> w = torch.zeros(4, 3)
        >>> mismatch(torch.nn.functional.linear, (torch.ones(2, 5), w), {})
        (-1, 3)
        >>> mismatch(torch.nn.functional.linear, (torch.ones(2, 3), w), {}) is None
        True
    """
    kind = function_kind(func) if _is_layer_function(func) else None
    want = kind.expects(args, kwargs) if kind is not None and kind.expects else None
    x = args[0] if args else None
    if want is None or not isinstance(x, torch.Tensor) or x.dim() == 0:
        return None
    return None if x.shape[want[0]] == want[1] else want


def _is_layer_function(func: Any) -> bool:
    try:
        return func in LAYER_FUNCTIONS
    except TypeError:  # an unhashable callable
        return False


class Mismatch(Exception):
    """Raised by ``ChannelCheck`` at the first layer call whose channels do not fit."""


class ChannelCheck(TorchFunctionMode):
    """Runs a forward checking every layer call's input channels (``mismatch``), convolutions,
    linear layers and batch norms by shape only, recording nothing; raises ``Mismatch`` at the
    first that does not fit.

    Example:
        >>> bad = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(4))
        >>> with ChannelCheck(), torch.no_grad():
        ...     _ = bad(torch.zeros(1, 3, 8, 8))
        Traceback (most recent call last):
        ...
        graphs.checks.Mismatch
    """

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if mismatch(func, args, kwargs) is not None:
            raise Mismatch()
        out = fast_call(func, args, kwargs) if func is not F.linear else linear_shape(args, kwargs)
        if out is None and func is F.batch_norm:
            out = batch_norm_view(args, kwargs)  # its channels were checked just above
        return func(*args, **kwargs) if out is None else out


def linear_shape(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Zeros shaped like ``F.linear(*args, **kwargs)`` when its input, weight and bias fit (as
    ``graphs.fastconv`` answers convolutions: channel checks need shapes, not values); None to
    run the real op (and meet its own error).

    Example:
        >>> linear_shape((torch.ones(2, 5, 3), torch.zeros(4, 3)), {}).shape
        torch.Size([2, 5, 4])
        >>> linear_shape((torch.ones(2, 5), torch.zeros(4, 3)), {}) is None
        True
    """
    bound = bound_args(args, kwargs, ("input", "weight", "bias"), {"bias": None})
    if bound is None:
        return None
    x, w, b = bound.get("input"), bound.get("weight"), bound["bias"]
    if type(x) is not torch.Tensor or not isinstance(w, torch.Tensor) or w.dim() != 2 \
            or x.dim() < 1 or x.shape[-1] != w.shape[1] or x.dtype != w.dtype \
            or x.device != w.device or (b is not None and tuple(b.shape) != (w.shape[0],)):
        return None
    return x.new_zeros((*x.shape[:-1], w.shape[0]))


def is_sound(model: nn.Module, example_inputs: Any) -> bool:
    """Whether ``model`` runs on ``example_inputs`` (eval mode, no grad, flags untouched) with
    every layer call getting the channels it expects.

    Example:
        >>> is_sound(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), torch.zeros(1, 3, 8, 8))
        True
    """
    runner, held = eval_runner(model)
    args, kwargs = split_inputs(example_inputs)
    try:
        with held, torch.no_grad(), ChannelCheck():
            runner(*args, **kwargs)
    except Exception:  # noqa: BLE001 - any failure: the worded run below says what it is
        return False
    return True


def channel_problems(model: nn.Module, example_inputs: Any) -> list[str]:
    """Every layer call whose input channels differ from what its tensors expect; [] if sound."""
    if is_sound(model, example_inputs):
        return []
    problems: list[str] = []

    def check(func: Any, args: tuple, kwargs: dict, module: str) -> tuple | None:
        want = mismatch(func, args, kwargs)
        if want is None:
            return None
        x, (dim, count) = args[0], want
        kind = type(model.get_submodule(module)).__name__
        problems.append(f"{module or 'model'} ({kind}) expects {count} channels on dim "
                        f"{dim % x.dim()}, gets {x.shape[dim]}")
        return (fit_channels(x, count, dim), *args[1:])

    try:
        capture(model, example_inputs, check=check)
    except TraceError as exc:
        if not problems:
            problems.append(f"{RUN_FAILS}{exc}")
    return problems
