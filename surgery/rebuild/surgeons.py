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

import copy
from collections.abc import Callable

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
    t = t.detach()
    selected = False
    for weight_dim, tensor_dim in dims.items():
        if weight_dim in keep:
            t = t.index_select(tensor_dim, keep[weight_dim].to(t.device))
            selected = True
    return t if selected else t.clone()  # index_select already made new memory


def _copy_into(new: nn.Module, old: nn.Module, tensors: dict[str, torch.Tensor | None]) -> nn.Module:
    with torch.no_grad():
        for name, value in tensors.items():
            if value is not None:
                getattr(new, name).copy_(value)
    new.train(old.training)
    return new


def respawn(old: nn.Module, config: dict[str, object],
            tensors: dict[str, torch.Tensor | None]) -> nn.Module | None:
    """A new ``type(old)`` with ``old``'s settings overridden by ``config``, holding ``tensors``.

    The fast path of the surgeons: constructing a layer (even via ``skip_init``) runs its weight
    init, which costs ~10x more than the ``index_select`` itself. The new module gets fresh
    registries (no hooks, only ``tensors`` as parameters and buffers); plain settings (stride,
    padding, ...) are copied. Returns None when ``old`` keeps tensors or modules outside its
    registries (e.g. ``weight_norm``): the caller then constructs the layer normally.
    """
    cls = type(old)
    fresh = cls.__new__(cls)
    nn.Module.__init__(fresh)
    settings = {k: copy.copy(v) if isinstance(v, (list, dict, set)) else v
                for k, v in old.__dict__.items() if k not in fresh.__dict__}
    if any(isinstance(v, (torch.Tensor, nn.Module)) for v in settings.values()):
        return None
    fresh.__dict__.update(settings)
    fresh.__dict__.update(config)
    fresh.training = old.training
    for name, value in tensors.items():
        if name in old._parameters:
            param = old._parameters[name]
            fresh.register_parameter(name, None if value is None else
                                     nn.Parameter(value, param is not None and param.requires_grad))
        else:
            persistent = name not in old._non_persistent_buffers_set
            fresh.register_buffer(name, value, persistent=persistent)
    return fresh


def conv(m: nn.Conv1d | nn.Conv2d | nn.Conv3d, keep: Keep) -> nn.Module:
    w = m.weight
    depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
    out_ch = len(keep[0]) if 0 in keep else m.out_channels
    in_ch = out_ch if depthwise else (len(keep[1]) * m.groups if 1 in keep else m.in_channels)
    groups = out_ch if depthwise else m.groups
    tensors = {"weight": _take(w, keep, {0: 0, 1: 1}), "bias": _take(m.bias, keep, {0: 0})}
    fast = respawn(m, {"in_channels": in_ch, "out_channels": out_ch, "groups": groups}, tensors)
    if fast is not None:
        return fast
    new = skip_init(type(m), in_ch, out_ch, m.kernel_size, m.stride, m.padding, m.dilation,
                    groups, m.bias is not None, m.padding_mode, device=w.device, dtype=w.dtype)
    return _copy_into(new, m, tensors)


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
    in_f = len(keep[1]) if 1 in keep else m.in_features
    out_f = len(keep[0]) if 0 in keep else m.out_features
    tensors = {"weight": _take(w, keep, {0: 0, 1: 1}), "bias": _take(m.bias, keep, {0: 0})}
    fast = respawn(m, {"in_features": in_f, "out_features": out_f}, tensors)
    if fast is not None:
        return fast
    new = skip_init(nn.Linear, in_f, out_f, m.bias is not None, device=w.device, dtype=w.dtype)
    return _copy_into(new, m, tensors)


def batch_norm(m: nn.BatchNorm2d, keep: Keep) -> nn.Module:
    n = len(keep[0]) if 0 in keep else m.num_features
    tensors = {k: _take(getattr(m, k), keep, {0: 0})
               for k in ("weight", "bias", "running_mean", "running_var")}
    tracked = m.num_batches_tracked
    tensors["num_batches_tracked"] = None if tracked is None else tracked.clone()
    fast = respawn(m, {"num_features": n}, tensors)
    if fast is not None:
        return fast
    ref = m.weight if m.weight is not None else m.running_mean
    new = skip_init(type(m), n, m.eps, m.momentum, m.affine, m.track_running_stats,
                    device=ref.device, dtype=ref.dtype)
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
    from surgery.rebuild.attention import surgeons as attention_surgeons
    table.update(attention_surgeons())
    return table


def rebuild(module: nn.Module, keep: Keep, surgeons: dict[type, Surgeon] | None = None
            ) -> nn.Module:
    """A new module like ``module`` with only the ``keep`` indices along each listed weight dim."""
    surgeon = (surgeons or default_surgeons()).get(type(module))
    if surgeon is None:
        raise SurgeryError(f"no surgeon for {type(module).__name__}")
    return surgeon(module, keep)
