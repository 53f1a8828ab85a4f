"""Surgeons: build a new, smaller layer from an old one. One table keyed by layer kind.

A surgeon is ``surgeon(module, keep) -> nn.Module`` where ``keep`` maps a weight dim to the
indices that stay (a dim not in ``keep`` stays whole). The table is keyed by the layer's kind
(``graphs.kinds``: what the layer holds, not its exact class), so subclasses with their own
forward, extra child modules or hooks (timm's ``BatchNormAct2d``, ``Conv2dSame``, torchvision's
``LayerNorm2d``) are rebuilt as well. Each surgeon works out the new sizes; ``respawn`` makes the
layer: same class, settings, child modules and hooks, tensors cut to ``keep``.

Example:
    >>> import torch
    >>> conv = nn.Conv2d(4, 8, 3)
    >>> rebuild(conv, {0: torch.tensor([0, 2]), 1: torch.tensor([1])})
    Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
    >>> sorted(default_surgeons())
    ['attention', 'batch_norm', 'conv', 'conv_transpose', 'embedding', 'group_norm', \
'layer_norm', 'linear', 'rms_norm']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn

from graphs.kinds import KINDS, layer_kind
from surgery.errors import SurgeryError
from surgery.rebuild.attention import multihead_attention
from surgery.rebuild.respawn import Keep, respawn

Surgeon = Callable[[nn.Module, Keep], nn.Module]


def _size(keep: Keep, dim: int, whole: int) -> int:
    return len(keep[dim]) if dim in keep else whole


def conv(m: nn.Module, keep: Keep) -> nn.Module:
    """in/out channels; a depthwise conv keeps groups == channels."""
    depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
    out_ch = _size(keep, 0, m.out_channels)
    in_ch = out_ch if depthwise else (len(keep[1]) * m.groups if 1 in keep else m.in_channels)
    groups = out_ch if depthwise else m.groups
    return respawn(m, keep, {"in_channels": in_ch, "out_channels": out_ch, "groups": groups})


def conv_transpose(m: nn.Module, keep: Keep) -> nn.Module:
    """in channels (weight dim 0) and out channels (weight dim 1)."""
    return respawn(m, keep, {"in_channels": _size(keep, 0, m.in_channels),
                             "out_channels": _size(keep, 1, m.out_channels)})


def linear(m: nn.Module, keep: Keep) -> nn.Module:
    """in and out features."""
    return respawn(m, keep, {"in_features": _size(keep, 1, m.in_features),
                             "out_features": _size(keep, 0, m.out_features)})


def batch_norm(m: nn.Module, keep: Keep) -> nn.Module:
    """num_features; affine, running stats and any other per-channel tensor cut."""
    return respawn(m, keep, {"num_features": _size(keep, 0, m.num_features)})


def layer_norm(m: nn.Module, keep: Keep) -> nn.Module:
    """normalized_shape along each kept dim."""
    shape = tuple(_size(keep, d, n) for d, n in enumerate(m.normalized_shape))
    return respawn(m, keep, {"normalized_shape": shape})


def group_norm(m: nn.Module, keep: Keep) -> nn.Module:
    """num_channels; num_groups loses the whole groups that went (one group: stays one)."""
    n = _size(keep, 0, m.num_channels)
    groups = 1 if m.num_groups == 1 else n // (m.num_channels // m.num_groups)
    return respawn(m, keep, {"num_channels": n, "num_groups": groups})


def embedding(m: nn.Module, keep: Keep) -> nn.Module:
    """embedding_dim (weight dim 1); the table's rows stay."""
    return respawn(m, keep, {"embedding_dim": _size(keep, 1, m.embedding_dim)})


class SurgeonTable:
    """Layer kind name (``graphs.kinds.KINDS``) -> surgeon; one surgeon per kind."""

    def __init__(self) -> None:
        self._surgeons: dict[str, Surgeon] = {}

    def register(self, kind: str, surgeon: Surgeon) -> None:
        """Add the surgeon of ``kind``; SurgeryError for an unknown kind or a second surgeon."""
        if kind not in {k.name for k in KINDS}:
            raise SurgeryError(f"unknown layer kind {kind!r}: graphs.kinds.KINDS has "
                               f"{', '.join(k.name for k in KINDS)}")
        if kind in self._surgeons:
            raise SurgeryError(f"layer kind {kind!r} already has a surgeon "
                               f"({self._surgeons[kind].__name__})")
        self._surgeons[kind] = surgeon

    def get(self, kind: str) -> Surgeon | None:
        """The surgeon of ``kind``, or None."""
        return self._surgeons.get(kind)

    def __contains__(self, kind: object) -> bool:
        return kind in self._surgeons

    def __iter__(self) -> Iterator[str]:
        return iter(self._surgeons)

    def for_module(self, module: nn.Module) -> Surgeon:
        """The surgeon of ``module``'s kind; SurgeryError when there is none."""
        kind = layer_kind(module)
        if kind is None or kind.name not in self._surgeons:
            raise SurgeryError(f"no surgeon for {type(module).__name__}")
        return self._surgeons[kind.name]


def default_surgeons() -> SurgeonTable:
    """A fresh table with a surgeon for every kind of ``graphs.kinds.KINDS``."""
    table = SurgeonTable()
    for kind, surgeon in (("attention", multihead_attention), ("conv_transpose", conv_transpose),
                          ("conv", conv), ("linear", linear), ("batch_norm", batch_norm),
                          ("layer_norm", layer_norm), ("group_norm", group_norm),
                          ("rms_norm", layer_norm), ("embedding", embedding)):
        table.register(kind, surgeon)
    return table


def rebuild(module: nn.Module, keep: Keep, surgeons: SurgeonTable | None = None) -> nn.Module:
    """A new module like ``module`` with only the ``keep`` indices along each listed weight dim."""
    return (surgeons or default_surgeons()).for_module(module)(module, keep)


def surgeon_table_markdown(surgeons: SurgeonTable | None = None) -> str:
    """The docs' table of layer kinds and their surgeons (docs/OVERVIEW.md is checked against it).

    Example:
        >>> print(surgeon_table_markdown().splitlines()[0])
        | kind | a layer is of this kind when it | surgeon | new sizes |
    """
    table = surgeons or default_surgeons()
    lines = ["| kind | a layer is of this kind when it | surgeon | new sizes |",
             "|---|---|---|---|"]
    for kind in KINDS:
        surgeon = table.get(kind.name)
        name = f"`{surgeon.__module__}.{surgeon.__name__}`" if surgeon else "none"
        doc = (surgeon.__doc__ or "").strip().splitlines()[0] if surgeon else \
            "its members name its parameters: `surgery.rebuild.apply.cut_parameter` cuts each" \
            if not kind.reference else ""
        lines.append(f"| `{kind.name}` | {kind.description} | {name} | {doc} |")
    return "\n".join(lines)

