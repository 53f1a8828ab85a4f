"""Surgeons: build a new, smaller layer from an old one. One table keyed by exact module type.

A surgeon is ``surgeon(module, keep) -> nn.Module`` where ``keep`` maps a weight dim to the
indices that stay (a dim not in ``keep`` stays whole). Layers are rebuilt from their constructor
arguments and ``index_select``ed tensors, never resized in place.

Example:
    >>> conv = nn.Conv2d(4, 8, 3)
    >>> rebuild(conv, {0: torch.tensor([0, 2]), 1: torch.tensor([1])})
    Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.utils import skip_init

from surgery.errors import SurgeryError

Keep = dict[int, torch.Tensor]
Surgeon = Callable[[nn.Module, Keep], nn.Module]


def _take(t: torch.Tensor | None, keep: Keep, dims: dict[int, int]) -> torch.Tensor | None:
    """Select kept indices of ``t``; ``dims`` maps weight dim -> this tensor's dim."""
    if t is None:
        return None
    for weight_dim, tensor_dim in dims.items():
        if weight_dim in keep:
            t = t.index_select(tensor_dim, keep[weight_dim].to(t.device))
    return t.detach().clone()


def _copy_into(new: nn.Module, old: nn.Module, tensors: dict[str, torch.Tensor | None]) -> nn.Module:
    with torch.no_grad():
        for name, value in tensors.items():
            if value is not None:
                getattr(new, name).copy_(value)
    new.train(old.training)
    return new


def conv(m: nn.Conv1d | nn.Conv2d | nn.Conv3d, keep: Keep) -> nn.Module:
    w = m.weight
    depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
    out_ch = len(keep[0]) if 0 in keep else m.out_channels
    in_ch = out_ch if depthwise else (len(keep[1]) * m.groups if 1 in keep else m.in_channels)
    new = skip_init(type(m), in_ch, out_ch, m.kernel_size, m.stride, m.padding, m.dilation,
                    out_ch if depthwise else m.groups, m.bias is not None, m.padding_mode,
                    device=w.device, dtype=w.dtype)
    return _copy_into(new, m, {"weight": _take(w, keep, {0: 0, 1: 1}),
                               "bias": _take(m.bias, keep, {0: 0})})


def conv_transpose(m: nn.ConvTranspose2d, keep: Keep) -> nn.Module:
    w = m.weight  # (in, out/groups, ...)
    in_ch = len(keep[0]) if 0 in keep else m.in_channels
    out_ch = len(keep[1]) if 1 in keep else m.out_channels
    new = skip_init(type(m), in_ch, out_ch, m.kernel_size, m.stride, m.padding,
                    m.output_padding, m.groups, m.bias is not None, m.dilation, m.padding_mode,
                    device=w.device, dtype=w.dtype)
    return _copy_into(new, m, {"weight": _take(w, keep, {0: 0, 1: 1}),
                               "bias": _take(m.bias, keep, {1: 0})})


def linear(m: nn.Linear, keep: Keep) -> nn.Module:
    w = m.weight
    new = skip_init(nn.Linear, len(keep[1]) if 1 in keep else m.in_features,
                    len(keep[0]) if 0 in keep else m.out_features,
                    m.bias is not None, device=w.device, dtype=w.dtype)
    return _copy_into(new, m, {"weight": _take(w, keep, {0: 0, 1: 1}),
                               "bias": _take(m.bias, keep, {0: 0})})


def batch_norm(m: nn.BatchNorm2d, keep: Keep) -> nn.Module:
    n = len(keep[0]) if 0 in keep else m.num_features
    ref = m.weight if m.weight is not None else m.running_mean
    new = skip_init(type(m), n, m.eps, m.momentum, m.affine, m.track_running_stats,
                    device=ref.device, dtype=ref.dtype)
    tensors = {k: _take(getattr(m, k), keep, {0: 0})
               for k in ("weight", "bias", "running_mean", "running_var")}
    tensors["num_batches_tracked"] = m.num_batches_tracked
    return _copy_into(new, m, tensors)


def layer_norm(m: nn.LayerNorm, keep: Keep) -> nn.Module:
    n = len(keep[0]) if 0 in keep else m.normalized_shape[0]
    new = nn.LayerNorm(n, m.eps, m.elementwise_affine, bias=m.bias is not None,
                       device=m.weight.device if m.weight is not None else None)
    return _copy_into(new, m, {k: _take(getattr(m, k), keep, {0: 0}) for k in ("weight", "bias")})


def group_norm(m: nn.GroupNorm, keep: Keep) -> nn.Module:
    n = len(keep[0]) if 0 in keep else m.num_channels
    groups = n if m.num_groups == m.num_channels else m.num_groups
    new = nn.GroupNorm(groups, n, m.eps, m.affine,
                       device=m.weight.device if m.weight is not None else None)
    return _copy_into(new, m, {k: _take(getattr(m, k), keep, {0: 0}) for k in ("weight", "bias")})


def default_surgeons() -> dict[type, Surgeon]:
    """A fresh table: exact module type -> surgeon."""
    table: dict[type, Surgeon] = {}
    for types, surgeon in (((nn.Conv1d, nn.Conv2d, nn.Conv3d), conv),
                           ((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
                            conv_transpose),
                           ((nn.Linear,), linear),
                           ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), batch_norm),
                           ((nn.LayerNorm,), layer_norm), ((nn.GroupNorm,), group_norm)):
        for t in types:
            table[t] = surgeon
    from surgery.rebuild_attention import surgeons as attention_surgeons
    table.update(attention_surgeons())
    return table


def rebuild(module: nn.Module, keep: Keep, surgeons: dict[type, Surgeon] | None = None
            ) -> nn.Module:
    """A new module like ``module`` with only the ``keep`` indices along each listed weight dim."""
    surgeon = (surgeons or default_surgeons()).get(type(module))
    if surgeon is None:
        raise SurgeryError(f"no surgeon for {type(module).__name__}")
    return surgeon(module, keep)


def replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Swap the submodule at qualified ``name`` for ``new`` (the one place modules change)."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
