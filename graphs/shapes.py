"""Run an fx graph for its shapes only: convolutions are not computed, their output is zeros.

Tracing and linting need every tensor's shape, never its values, yet a real forward pass at
224x224 spends most of its time in convolutions. ``ShapeRunner`` is an ``fx.Interpreter`` that
answers a plain convolution by the output-size formula of the ``nn.Conv2d`` docs (zeros of that
shape) after checking what the real layer would check (input rank, channels, dtype, device).
A BatchNorm (eval mode) fed such zeros passes them on unchanged after the same checks.
Anything unusual (string padding, non-zero padding modes, subclasses, extra arguments, an input
the layer would reject) runs the real layer, so its own error message surfaces unchanged.
Everything else runs for real on the (partly zero) values, so shape errors still raise.

Example:
    >>> conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    >>> conv_output(conv, (torch.ones(1, 3, 9, 9),), {}).shape
    torch.Size([1, 8, 5, 5])
    >>> conv_output(conv, (torch.ones(1, 4, 9, 9),), {}) is None  # the real layer must complain
    True
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import fx, nn

_PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """One spatial side after a convolution (floor mode), as in the nn.Conv2d docs.

    Example:
        >>> conv_output_size(224, 7, 2, 3, 1), conv_output_size(56, 3, 1, 1, 2)
        (112, 54)
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_output(m: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Zeros shaped like ``m(*args)`` for a plain Conv1d/2d/3d, or None to run the real layer."""
    if type(m) not in _PLAIN_CONVS or kwargs or len(args) != 1:
        return None
    x, w = args[0], m.weight
    spatial = len(m.kernel_size)
    if not isinstance(x, torch.Tensor) or x.dim() not in (spatial + 1, spatial + 2) \
            or isinstance(m.padding, str) or m.padding_mode != "zeros" \
            or x.dtype != w.dtype or x.device != w.device \
            or x.shape[-spatial - 1] != m.in_channels or not _weights_fit(m):
        return None
    sides = [conv_output_size(x.shape[-spatial + i], m.kernel_size[i], m.stride[i],
                              m.padding[i], m.dilation[i]) for i in range(spatial)]
    if min(sides) < 1 or min(x.shape) < 1:
        return None
    return x.new_zeros((*x.shape[:-spatial - 1], m.out_channels, *sides))


def _weights_fit(m: nn.Module) -> bool:
    """The layer's tensors agree with its channel attributes (the real conv would check)."""
    w, b = m.weight, m.bias
    return (tuple(w.shape[2:]) == tuple(m.kernel_size) and w.shape[0] == m.out_channels
            and w.shape[1] * m.groups == m.in_channels and m.out_channels % m.groups == 0
            and (b is None or tuple(b.shape) == (m.out_channels,)))


def norm_output(m: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``x`` itself for an eval-mode BatchNorm that would accept ``x`` (same shape), else None.

    Only for inputs the runner made itself (zeros standing in for a conv output): returning the
    same tensor skips the arithmetic, and nothing outside the run can see the aliasing.
    """
    ranks = _NORM_RANKS.get(type(m))
    if ranks is None or kwargs or len(args) != 1 or m.training or m.running_mean is None:
        return None
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.dim() not in ranks or x.shape[1] != m.num_features:
        return None
    tensors = (m.weight, m.bias, m.running_mean, m.running_var)
    if any(t is not None and (tuple(t.shape) != (m.num_features,) or t.dtype != x.dtype
                              or t.device != x.device) for t in tensors):
        return None
    return x


_NORM_RANKS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}


class ShapeRunner(fx.Interpreter):
    """An interpreter of ``graph`` over ``root`` (no GraphModule needed) that skips conv maths.

    Conv outputs are zeros it made (``conv_output``); a BatchNorm applied to such a tensor
    returns it unchanged (``norm_output``). Every other node runs for real.
    """

    def __init__(self, root: nn.Module, graph: fx.Graph) -> None:
        super().__init__(root, garbage_collect_values=True, graph=graph)
        self.extra_traceback = False  # callers word their own errors
        self.made: weakref.WeakValueDictionary[int, torch.Tensor] = \
            weakref.WeakValueDictionary()  # id -> tensor this runner created (weak: ids recycle)

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        m = self.fetch_attr(target)
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and self.made.get(id(x)) is x:
            out = norm_output(m, args, kwargs)
            if out is not None:
                return out
        out = conv_output(m, args, kwargs)
        if out is None:
            return super().call_module(target, args, kwargs)
        self.made[id(out)] = out
        return out
