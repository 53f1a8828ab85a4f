"""Convolutions by shape only: during capture a plain convolution returns zeros of its shape
(and a batch norm of such stand-ins a view of its input, ``batch_norm_view``).

Coupling needs every tensor's shape, never its values, and convolutions are most of a forward
pass. ``fast_call`` answers ``torch.conv1d/2d/3d`` by the output-size formula of the
``nn.Conv2d`` docs after the checks the real op would make (rank, channels, dtype, device);
anything else (string padding, an input the op would reject) returns None: run the real op, so
its own error surfaces.

Example:
    >>> w = torch.zeros(8, 3, 3, 3)
    >>> fast_call(torch.conv2d, (torch.ones(1, 3, 9, 9), w, None, 2, 1), {}).shape
    torch.Size([1, 8, 5, 5])
    >>> fast_call(torch.conv2d, (torch.ones(1, 4, 9, 9), w), {}) is None
    True
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

_CONVS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_NAMES = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """One spatial side after a convolution (floor mode), as in the nn.Conv2d docs.

    Example:
        >>> conv_output_size(224, 7, 2, 3, 1), conv_output_size(56, 3, 1, 1, 2)
        (112, 54)
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def bound_args(args: tuple, kwargs: dict, names: tuple[str, ...],
               defaults: dict[str, Any]) -> dict[str, Any] | None:
    """``args`` and ``kwargs`` of a call by parameter name (``names`` in order), over
    ``defaults``; None when there are more args than names or a keyword not among them (the
    real op then meets its own error). A parameter neither given nor defaulted is absent.

    Example:
        >>> bound_args((1,), {"c": 3}, ("a", "b", "c"), {"b": 0})
        {'b': 0, 'a': 1, 'c': 3}
        >>> bound_args((1,), {"d": 3}, ("a", "b", "c"), {}) is None
        True
    """
    if len(args) > len(names) or set(kwargs) - set(names):
        return None
    return {**defaults, **dict(zip(names, args)), **kwargs}


def _triple(value: Any, n: int) -> tuple[int, ...] | None:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(values) == 1:
        values = values * n
    return values if len(values) == n and all(type(v) is int for v in values) else None


def fast_call(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Zeros shaped like ``func(*args, **kwargs)`` for a plain convolution, else None."""
    spatial = _CONVS.get(func) if not inspect.ismethod(func) else None
    v = bound_args(args, kwargs, _NAMES, _DEFAULTS) if spatial else None
    if v is None or "input" not in v or "weight" not in v:
        return None
    x, w, b, groups = v["input"], v["weight"], v["bias"], v["groups"]
    sizes = [_triple(v[k], spatial) for k in ("stride", "padding", "dilation")]
    if any(s is None for s in sizes) or not isinstance(x, torch.Tensor) \
            or not isinstance(w, torch.Tensor) or type(groups) is not int or groups < 1 \
            or x.dim() != spatial + 2 or w.dim() != spatial + 2 \
            or x.dtype != w.dtype or x.device != w.device or type(x) is not torch.Tensor \
            or x.shape[1] != w.shape[1] * groups or w.shape[0] % groups \
            or (b is not None and tuple(b.shape) != (w.shape[0],)):
        return None
    stride, padding, dilation = sizes
    sides = [conv_output_size(x.shape[2 + i], w.shape[2 + i], stride[i], padding[i], dilation[i])
             for i in range(spatial)]
    if min(sides) < 1 or min(x.shape) < 1:
        return None
    return x.new_zeros((x.shape[0], w.shape[0], *sides))


_NORM_NAMES = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum",
               "eps")


def batch_norm_view(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A view of the input of an eval-mode ``F.batch_norm(*args, **kwargs)`` whose tensors fit
    it (what the op would check), else None: run the real op.

    For the capture of an input whose values are stand-ins already (after a convolution by
    shape): the output has the input's shape, and as a view it takes no memory (a DenseNet's
    norms over its concatenations are a third of its peak).

    Example:
        >>> x, stats = torch.zeros(1, 4, 3, 3), torch.zeros(4)
        >>> batch_norm_view((x, stats, stats), {}).shape
        torch.Size([1, 4, 3, 3])
        >>> batch_norm_view((x, stats, stats), {"training": True}) is None
        True
    """
    v = bound_args(args, kwargs, _NORM_NAMES, {"weight": None, "bias": None, "training": False})
    if v is None:
        return None
    x, stats = v.get("input"), (v.get("running_mean"), v.get("running_var"))
    if type(x) is not torch.Tensor or x.dim() < 2 or v["training"] is not False \
            or not x.dtype.is_floating_point or not all(isinstance(t, torch.Tensor) for t in stats):
        return None
    for t in (*stats, v["weight"], v["bias"]):
        if t is not None and (not isinstance(t, torch.Tensor) or t.device != x.device
                              or tuple(t.shape) != (x.shape[1],)):
            return None
    return x.view(x.shape)
