"""Output channels per layer, before and after pruning: the rows of the report and its chart.

Example:
    >>> from torch import nn
    >>> layer_widths(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 4, 2)))
    {'0': ('Conv2d', 8, 0), '1': ('ConvTranspose2d', 4, 1)}
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from graphs.kinds import layer_kind


@dataclass(frozen=True)
class LayerWidth:
    """Output channels (or features) of one Conv/Linear/norm layer; ``after`` None: no after."""

    name: str
    kind: str
    before: int
    after: int | None


def layer_widths(model: nn.Module) -> dict[str, tuple[str, int, int]]:
    """Layer name -> (type name, output width, output weight dim) of each layer with a width.

    Example:
        >>> layer_widths(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))
        {'0': ('Conv2d', 8, 0), '1': ('BatchNorm2d', 8, 0)}
    """
    found = {}
    for name, module in model.named_modules():
        kind = layer_kind(module)
        if kind is not None and kind.width is not None:
            found[name] = (type(module).__name__, kind.width(module), kind.out_dim)
    return found
