"""What a layer holds, the one layer-type table of surgery: its kind, widths and indexed tensor.

A layer's *kind* is decided from what it holds, not from its exact class: any subclass of
torch's conv base class is a ``conv``, any ``nn.Linear`` subclass a ``linear``, a module with a
packed ``in_proj_weight`` an ``attention`` layer, and so on. Rebuilding (``surgery.rebuild``),
linting and the report's per-layer widths all read ``KINDS`` through ``layer_kind``.

Example:
    >>> from torch import nn
    >>> class MyConv(nn.Conv2d):
    ...     pass
    >>> layer_kind(MyConv(3, 8, 3)).name, layer_kind(nn.BatchNorm1d(4)).name
    ('conv', 'batch_norm')
    >>> layer_kind(nn.ReLU()) is None
    True
    >>> [k.name for k in KINDS]
    ['attention', 'conv_transpose', 'conv', 'linear', 'batch_norm', 'layer_norm', 'group_norm', \
'rms_norm', 'embedding']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from graphs.datamodel import SIZE


@dataclass(frozen=True)
class LayerKind:
    """One kind of layer: how to recognise it and where its channel counts live.

    ``holds(module)`` says whether a module is of this kind (``description`` says it in words
    for the docs); ``out_dim`` is the weight dim of its
    output channels; ``width(module)`` its output width; ``input_axis`` and ``input_width`` the
    axis of its input that carries channels and how many it expects (None: not checked).
    """

    name: str
    description: str
    holds: Callable[[nn.Module], bool]
    out_dim: int
    width: Callable[[nn.Module], int] | None
    input_axis: int | None
    input_width: Callable[[nn.Module], int] | None


def _has_packed_projection(m: nn.Module) -> bool:
    return isinstance(getattr(m, "in_proj_weight", None), torch.Tensor)


def _normalized(m: nn.Module) -> tuple[int, ...]:
    return tuple(m.normalized_shape)


KINDS: tuple[LayerKind, ...] = (  # first match wins
    LayerKind("attention", "holds a packed `in_proj_weight` (`nn.MultiheadAttention`)",
              _has_packed_projection, 0, None, None, None),
    LayerKind("conv_transpose", "is a `torch.nn.modules.conv._ConvTransposeNd`",
              lambda m: isinstance(m, _ConvTransposeNd), 1,
              lambda m: m.out_channels, 1, lambda m: m.in_channels),
    LayerKind("conv", "is a `torch.nn.modules.conv._ConvNd` (any `nn.Conv*d` subclass)",
              lambda m: isinstance(m, _ConvNd), 0,
              lambda m: m.out_channels, 1, lambda m: m.in_channels),
    LayerKind("linear", "is an `nn.Linear`", lambda m: isinstance(m, nn.Linear), 0,
              lambda m: m.out_features, -1, lambda m: m.in_features),
    LayerKind("batch_norm", "is a `torch.nn.modules.batchnorm._NormBase` (batch/instance norm)",
              lambda m: isinstance(m, _NormBase), 0,
              lambda m: m.num_features, 1, lambda m: m.num_features),
    LayerKind("layer_norm", "is an `nn.LayerNorm`", lambda m: isinstance(m, nn.LayerNorm), 0,
              lambda m: math.prod(_normalized(m)), -1, lambda m: _normalized(m)[-1]),
    LayerKind("group_norm", "is an `nn.GroupNorm`", lambda m: isinstance(m, nn.GroupNorm), 0,
              lambda m: m.num_channels, 1, lambda m: m.num_channels),
    LayerKind("rms_norm", "is an `nn.RMSNorm`", lambda m: isinstance(m, nn.RMSNorm), 0,
              lambda m: math.prod(_normalized(m)), -1, lambda m: _normalized(m)[-1]),
    LayerKind("embedding", "is an `nn.Embedding` (its features: weight dim 1)",
              lambda m: isinstance(m, nn.Embedding), 1, lambda m: m.embedding_dim, None, None),
)


def layer_kind(module: nn.Module) -> LayerKind | None:
    """The first entry of ``KINDS`` that holds ``module``; None for other modules."""
    return next((kind for kind in KINDS if kind.holds(module)), None)


def weight_of(module: nn.Module) -> torch.Tensor | None:
    """The tensor a group member's weight dim indexes: ``weight``, or packed ``in_proj_weight``.

    Example:
        >>> tuple(weight_of(nn.MultiheadAttention(8, 2)).shape)
        (24, 8)
    """
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor):
        w = getattr(module, "in_proj_weight", None)
    return w if isinstance(w, torch.Tensor) else None


def member_tensor(model: nn.Module, member) -> torch.Tensor | None:
    """The tensor a group member's dim indexes: the parameter (or buffer) it names (``member.attr``), else
    the layer's ``indexed_tensor``; None for a SIZE member (an int attribute, no tensor).

    Example:
        >>> from graphs.datamodel import Member
        >>> model = nn.Sequential(nn.Linear(2, 3))
        >>> tuple(member_tensor(model, Member("0", "out", 0, (), "bias")).shape)
        (3,)
    """
    if member.role == SIZE:
        return None
    module = model.get_submodule(member.module)
    if member.attr:
        tensor = module._parameters.get(member.attr)
        tensor = module._buffers.get(member.attr) if tensor is None else tensor
        return tensor if isinstance(tensor, torch.Tensor) else None
    return indexed_tensor(module)


def indexed_tensor(module: nn.Module) -> torch.Tensor | None:
    """What a group member's dim indexes: ``weight_of(module)``, else a norm's running stats.

    Example:
        >>> tuple(indexed_tensor(nn.BatchNorm2d(4, affine=False)).shape)
        (4,)
    """
    w = weight_of(module)
    if w is None:
        w = getattr(module, "running_mean", None)
    return w if isinstance(w, torch.Tensor) else None
