"""The per-kind maths of the layer-kind table (``graphs.kinds``): plain functions of a layer's
settings and tensors, no tracing.

* ``expects_*(args, kwargs)``: the (input dim, channel count) a call of the kind's function
  expects, read from the tensors it is called with (``graphs.checks``);
* ``sizes_*(module, tensor)``: (attribute, the value the layer's indexed tensor implies) for its
  size attributes (``lint``);
* ``resize_*(module, sizes)``: a fresh plain layer like ``module`` with weight dim d of size
  ``sizes[d]``, for timing (the latency tables); None when the layer cannot be timed alone.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(4, 8, 3, groups=2)
    >>> expects_conv((torch.zeros(1, 4, 5, 5), conv.weight, None, 1, 0, 1, 2), {})
    (1, 4)
    >>> sizes_conv(conv, conv.weight)
    [('out_channels', 8), ('in_channels', 4)]
    >>> resize_linear(nn.Linear(4, 8), {0: 3})
    Linear(in_features=4, out_features=3, bias=True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

_CONV_CLASSES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _get(args: tuple, kwargs: dict, i: int, name: str) -> Any:
    return args[i] if len(args) > i else kwargs.get(name)


def expects_conv(args: tuple, kwargs: dict) -> tuple[int, int] | None:
    """``conv*d(x, weight, bias, stride, padding, dilation, groups)``: in/groups per group."""
    w, groups = _get(args, kwargs, 1, "weight"), _get(args, kwargs, 6, "groups") or 1
    return (1, w.shape[1] * groups) if isinstance(w, torch.Tensor) else None


def expects_conv_transpose(args: tuple, kwargs: dict) -> tuple[int, int] | None:
    """``conv_transpose*d(x, weight, ...)``: the weight's dim 0 is the input channels."""
    w = _get(args, kwargs, 1, "weight")
    return (1, w.shape[0]) if isinstance(w, torch.Tensor) else None


def expects_linear(args: tuple, kwargs: dict) -> tuple[int, int] | None:
    """``linear(x, weight, bias)``: features on the last dim."""
    w = _get(args, kwargs, 1, "weight")
    return (-1, w.shape[-1]) if isinstance(w, torch.Tensor) else None


def expects_batch_norm(args: tuple, kwargs: dict) -> tuple[int, int] | None:
    """``batch_norm`` / ``instance_norm(x, running_mean, running_var, weight, bias, ...)``."""
    found = (_get(args, kwargs, 1, "running_mean"), _get(args, kwargs, 3, "weight"))
    t = next((t for t in found if isinstance(t, torch.Tensor)), None)
    return (1, t.shape[0]) if t is not None else None


def expects_group_norm(args: tuple, kwargs: dict) -> tuple[int, int] | None:
    """``group_norm(x, num_groups, weight, bias, eps)``."""
    w = _get(args, kwargs, 2, "weight")
    return (1, w.shape[0]) if isinstance(w, torch.Tensor) else None


def expects_last_dim_norm(args: tuple, kwargs: dict) -> tuple[int, int] | None:
    """``layer_norm`` / ``rms_norm(x, normalized_shape, ...)``: its last size, on the last dim."""
    shape = _get(args, kwargs, 1, "normalized_shape")
    return (-1, tuple(shape)[-1]) if shape is not None and len(tuple(shape)) else None


def sizes_conv(m: nn.Module, w: torch.Tensor) -> list[tuple[str, Any]]:
    """A conv's weight is (out, in/groups, ...)."""
    return [("out_channels", w.shape[0]), ("in_channels", w.shape[1] * m.groups)]


def sizes_conv_transpose(m: nn.Module, w: torch.Tensor) -> list[tuple[str, Any]]:
    """A transposed conv's weight is (in, out/groups, ...)."""
    return [("out_channels", w.shape[1] * m.groups), ("in_channels", w.shape[0])]


def sizes_linear(m: nn.Module, w: torch.Tensor) -> list[tuple[str, Any]]:
    return [("out_features", w.shape[0]), ("in_features", w.shape[1])]


def sizes_batch_norm(m: nn.Module, w: torch.Tensor) -> list[tuple[str, Any]]:
    return [("num_features", w.shape[0])]


def sizes_group_norm(m: nn.Module, w: torch.Tensor) -> list[tuple[str, Any]]:
    return [("num_channels", w.shape[0])]


def sizes_layer_norm(m: nn.Module, w: torch.Tensor) -> list[tuple[str, Any]]:
    return [("normalized_shape", tuple(w.shape))]


def sizes_recurrent(m: nn.Module, w: torch.Tensor | None) -> list[tuple[str, Any]]:
    """``weight_ih_l0`` is (gates * hidden, input); ``weight_hr_l0`` (proj, hidden)."""
    gates, w = {"LSTM": 4, "GRU": 3}.get(m.mode, 1), m.weight_ih_l0
    found = [("input_size", w.shape[1]), ("hidden_size", w.shape[0] // gates)]
    return found + ([("proj_size", m.weight_hr_l0.shape[0])] if m.proj_size else [])


def recurrent_macs(steps: int, matrices: list[tuple[int, ...]]) -> int:
    """MACs of a recurrent layer run over ``steps`` positions (time steps times batch): every
    weight matrix multiplies one vector per step (gates' element-wise maths not counted).

    Example:
        >>> recurrent_macs(10, [(32, 6), (32, 8)])  # an LSTM(6, 8): 4 gates of 8
        4480
    """
    return steps * sum(s[0] * s[1] for s in matrices if len(s) == 2)


def no_sizes(m: nn.Module, w: torch.Tensor) -> list[tuple[str, Any]]:
    """A kind whose size attributes are not checked against its tensors."""
    return []


def resize_linear(m: nn.Module, sizes: Mapping[int, int]) -> nn.Module:
    """A plain ``nn.Linear`` with out features ``sizes[0]`` and in features ``sizes[1]``."""
    out, inp = sizes.get(0, m.out_features), sizes.get(1, m.in_features)
    return nn.Linear(inp, out, bias=m.bias is not None)


def resize_conv(m: nn.Module, sizes: Mapping[int, int]) -> nn.Module | None:
    """A plain ``nn.Conv*d`` with out channels ``sizes[0]`` and in channels ``sizes[1]``; None
    for a grouped conv other than depthwise, or a conv of another rank."""
    plain = next((c for c in _CONV_CLASSES if isinstance(m, c)), None)
    if plain is None:
        return None
    out = sizes.get(0, m.out_channels)
    if m.groups == 1:
        inp, groups = sizes.get(1, m.in_channels), 1
    elif m.groups == m.in_channels == m.out_channels:
        inp = groups = out
    else:
        return None
    return plain(inp, out, m.kernel_size, m.stride, m.padding, m.dilation, groups,
                 m.bias is not None, m.padding_mode)
