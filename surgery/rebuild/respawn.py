"""Rebuild one layer as a smaller copy of itself: same class, settings, child modules and hooks.

``respawn(old, keep, sizes)`` makes a new ``type(old)`` without running its constructor (a
constructor runs the weight init, ~10x the cost of the ``index_select`` itself): it copies the
old layer's attributes, gives it copies of its child modules and its hooks, ``index_select``s
every parameter, buffer and plain tensor attribute along the kept dims, and overrides the size
attributes with ``sizes``. The old layer is left untouched and shares no tensor memory with
the new one.

Which dims of a tensor are cut: one shaped like the layer's reference tensor (``weight``, or a
norm's running stats) is cut along every kept dim; one whose first dim is the layer's output
width (a bias, ``weight_norm``'s ``weight_g``) along the output dim; anything else is copied.

Example:
    >>> import torch
    >>> from torch import nn
    >>> bn = nn.BatchNorm1d(4)
    >>> small = respawn(bn, {0: torch.tensor([1, 3])}, {"num_features": 2})
    >>> type(small).__name__, small.num_features, tuple(small.running_mean.shape)
    ('BatchNorm1d', 2, (2,))
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from graphs.kinds import indexed_tensor, layer_kind
from surgery.errors import SurgeryError

Keep = dict[int, torch.Tensor]


def respawn(old: nn.Module, keep: Keep, sizes: dict[str, object]) -> nn.Module:
    """A new ``type(old)`` holding ``old``'s tensors cut to ``keep``, with ``sizes`` set."""
    kind = layer_kind(old)
    if kind is None:
        raise SurgeryError(f"no layer kind holds {type(old).__name__}: cannot rebuild it")
    cls = type(old)
    new = cls.__new__(cls)
    new.__dict__.update({k: _copied(v) for k, v in old.__dict__.items()})
    new.__dict__["_modules"] = {name: copy.deepcopy(child)
                                for name, child in old._modules.items()}
    reference = indexed_tensor(old)
    width = kind.width(old) if kind.width is not None else None
    for store in (new._parameters, new._buffers):
        for name, t in store.items():
            if t is not None:
                cut = take(t, keep, _dims(t, reference, width, kind.out_dim))
                store[name] = nn.Parameter(cut, t.requires_grad) \
                    if isinstance(t, nn.Parameter) else cut
    for name, t in old.__dict__.items():
        if isinstance(t, torch.Tensor):  # e.g. weight_norm's weight, recomputed by its hook
            new.__dict__[name] = take(t, keep, _dims(t, reference, width, kind.out_dim))
    _cut_parametrizations(new, keep, reference, width, kind.out_dim)
    new.__dict__.update(sizes)
    return new


def _copied(value: object) -> object:
    """A registry or hook table (list, dict, set) copied one level deep; anything else as is."""
    kind = type(value)
    if kind in _PLAIN:  # .copy(): copy.copy goes through __reduce_ex__, 10x slower
        return value.copy()
    if kind in _ATOMS:
        return value
    return copy.copy(value) if isinstance(value, (list, dict, set)) else value


_PLAIN = frozenset((dict, list, set, OrderedDict))
_ATOMS = frozenset((bool, int, float, str, tuple, type(None)))


def _cut_parametrizations(new: nn.Module, keep: Keep, reference: torch.Tensor | None,
                          width: int | None, out_dim: int) -> None:
    """Cut the tensors a parametrized weight is computed from (``parametrizations.weight``'s
    ``original`` / ``original0`` g / ``original1`` v, by the same rule as the layer's own) and a
    ``spectral_norm``'s power-iteration vectors: ``_u`` (output channels) and ``_v`` (the
    flattened fan-in: ``kernel`` positions per input channel)."""
    for plist in getattr(new, "parametrizations", {}).values():
        for name, t in list(plist._parameters.items()):
            plist._parameters[name] = nn.Parameter(
                take(t, keep, _dims(t, reference, width, out_dim)), t.requires_grad)
        for sub in plist:
            for name, t in list(sub._buffers.items()):
                if t is not None:
                    sub._buffers[name] = _cut_vector(name, t, keep, reference, width, out_dim)


def _cut_vector(name: str, t: torch.Tensor, keep: Keep, reference: torch.Tensor | None,
                width: int | None, out_dim: int) -> torch.Tensor:
    """spectral_norm's ``_v`` runs over the reference's flattened fan-in; anything else as the
    layer's own tensors."""
    if name != "_v" or reference is None or t.dim() != 1 or t.shape[0] != reference[0].numel():
        return take(t, keep, _dims(t, reference, width, out_dim))
    if 1 not in keep:
        return t.clone()
    per = t.shape[0] // reference.shape[1]
    index = keep[1].to(t.device)[:, None] * per + torch.arange(per, device=t.device)
    return t.index_select(0, index.reshape(-1))


def _dims(t: torch.Tensor, reference: torch.Tensor | None, width: int | None,
          out_dim: int) -> dict[int, int]:
    """Layer dim -> this tensor's dim, for the dims of ``t`` that follow the layer's channels."""
    if reference is not None and t.shape == reference.shape:
        return {d: d for d in range(t.dim())}
    if width is not None and t.dim() >= 1 and t.shape[0] == width:
        return {out_dim: 0}
    return {}


def take(t: torch.Tensor, keep: Keep, dims: dict[int, int]) -> torch.Tensor:
    """``t`` (detached) with only the kept indices along the mapped dims; always new memory.

    Example:
        >>> take(torch.arange(6).reshape(2, 3), {1: torch.tensor([0, 2])}, {1: 1})
        tensor([[0, 2],
                [3, 5]])
    """
    t, layout = t.detach(), _layout(t)
    selected = False
    for layer_dim, tensor_dim in dims.items():
        if layer_dim in keep:
            t = t.index_select(tensor_dim, keep[layer_dim].to(t.device))
            selected = True
    t = t if selected else t.clone()  # index_select already made new memory
    return t.contiguous(memory_format=layout) if layout is not None else t


def _layout(t: torch.Tensor) -> torch.memory_format | None:
    """channels_last (or its 3-d form) when ``t`` is stored so, and not merely contiguous."""
    for layout, rank in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
        if t.dim() == rank and not t.is_contiguous() and t.is_contiguous(memory_format=layout):
            return layout
    return None


def carry_hooks(old: nn.Module, new: nn.Module) -> nn.Module:
    """Give ``new`` (a layer rebuilt another way) copies of ``old``'s hook tables; returns it."""
    for name, value in old.__dict__.items():
        if "hooks" in name and isinstance(value, dict):
            new.__dict__[name] = copy.copy(value)
    return new
