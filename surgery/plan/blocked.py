"""What keeps a model's channels from being pruned: the prunable fraction, the blocking reasons
counted by channels, and the layers with parameters that no group reads.

``prune()`` warns (``BlockedWarning``) when less than half of a model's channels are prunable or
some layers are left as they are, so a nearly untouched model never passes silently.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from graphs import trace
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ChannelShuffle(2), nn.Conv2d(8, 4, 3))
    >>> found = blocked_summary(model, trace(model, torch.zeros(1, 3, 8, 8)))
    >>> found.fraction, found.worrying, found.blockers[0].reason, found.blockers[0].channels
    (0.0, True, 'unsupported op channel_shuffle', 16)
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from graphs.datamodel import SIZE, DependencyGraph, Group

# The model's own inputs and outputs are never pruned: not counted as blocked channels.
BOUNDARY = ("touches the model input", "touches the model output")
SEE_ALL = "print(result.graph) or `surgery graph MODEL` shows every group"

_SOURCE = re.compile(r" \(at (\S+:\d+: .*)\)$")  # a reason's " (at file:line: code)"
_NODE = re.compile(r" at node (\w+)")
_OWNER = re.compile(r" in '[^']*'")  # "unsupported op X at node n in 'layer'"
_NUMBERED = re.compile(r"(?<![\w.'])([a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*)_\d+(?![\w.'])")
# ^ fx node names in a reason: view_3, conv2d_1 (not dotted module names: layers.block_0)


class BlockedWarning(UserWarning):
    """Most of a model's channels cannot be pruned, or some of its layers are not read."""


@dataclass(frozen=True)
class Blocker:
    """One reason that keeps channels whole: how many channels, in how many groups, the
    ``file:line: code`` the graph records for it ("" if none) and the first group's layers."""

    reason: str
    channels: int
    groups: int
    source: str
    layers: tuple[str, ...]

    def line(self) -> str:
        """One line: channels, reason and where (the source line, else the layers).

        Example:
            >>> Blocker("unsupported op lstm", 320, 5, "net.py:8: y = self.lstm(x)", ()).line()
            '320 channels in 5 groups: unsupported op lstm (at net.py:8: y = self.lstm(x))'
        """
        groups = f" in {self.groups} groups" if self.groups > 1 else ""
        more = f" +{len(self.layers) - 3} more" if len(self.layers) > 3 else ""
        where = (f"at {_short(self.source)}" if self.source
                 else ", ".join(self.layers[:3]) + more)
        return f"{self.channels:,} channels{groups}: {self.reason}" + \
            (f" ({where})" if where else "")


@dataclass(frozen=True)
class BlockedSummary:
    """Channels inside the model (its own input and output channels not counted; a group
    counts ``channels_of`` it), how many of them are prunable, the reasons for the rest (most
    channels first) and the layers with parameters of their own that no group reads, as
    (name, class name)."""

    prunable: int
    channels: int
    blockers: tuple[Blocker, ...]
    untouched: tuple[tuple[str, str], ...]

    @property
    def fraction(self) -> float:
        return self.prunable / self.channels if self.channels else 1.0

    @property
    def worrying(self) -> bool:
        """Less than half the channels are prunable, or some layers are left as they are."""
        return self.fraction < 0.5 or bool(self.untouched)

    def lines(self, top: int = 5) -> list[str]:
        """A headline, the ``top`` reasons, and the untouched layers (a few, then a count).

        Example:
            >>> x = Blocker("x", 64, 1, "", ("a", "b"))
            >>> BlockedSummary(0, 64, (x,), (("rnn", "GRU"),)).lines()
            ['0.0% of the channels are prunable (0 of 64 inside the model)', \
'64 channels: x (a, b)', 'layers no rule reads, kept as they are: rnn (GRU)']
        """
        head = (f"{self.fraction:.1%} of the channels are prunable ({self.prunable:,} of "
                f"{self.channels:,} inside the model)")
        lines = [head]
        lines += [b.line() for b in self.blockers[:top]]
        if len(self.blockers) > top:
            lines.append(f"... {len(self.blockers) - top} more reasons")
        if self.untouched:
            shown = ", ".join(f"{n} ({c})" for n, c in self.untouched[:top])
            more = f" +{len(self.untouched) - top} more" if len(self.untouched) > top else ""
            lines.append(f"layers no rule reads, kept as they are: {shown}{more}")
        return lines


def blocked_summary(model: nn.Module, graph: DependencyGraph) -> BlockedSummary:
    """Count prunable and blocked channels of ``graph`` (traced from ``model``) by reason.

    Reasons are merged once fx node names are taken out (``group_norm at node group_norm_1``
    and ``... at node group_norm_2`` are one reason), see ``reason_key``.
    """
    inner = [g for g in graph.groups if g.reason not in BOUNDARY]
    merged: dict[str, list[Group]] = {}
    for g in inner:
        if not g.prunable:
            merged.setdefault(reason_key(g.reason), []).append(g)
    sources = {u.node: u.source for u in graph.unsupported if u.source}
    blockers = [Blocker(key, sum(map(channels_of, gs)), len(gs), _source(gs, sources),
                        gs[0].modules()) for key, gs in merged.items()]
    blockers.sort(key=lambda b: -b.channels)
    return BlockedSummary(sum(channels_of(g) for g in inner if g.prunable),
                          sum(map(channels_of, inner)), tuple(blockers),
                          untouched_layers(model, graph))


def channels_of(group: Group) -> int:
    """The channels a group spans in its narrowest layer: a group of 8 GroupNorm groups of 8
    channels counts 64, attention heads count their head dims, a conv's channels read by a
    Linear after a flatten count once (not once per input feature).

    Example:
        >>> from graphs.datamodel import IN, OUT, Member
        >>> conv = Member("conv", OUT, 0, ((0, 1), (2, 3)))  # 2 channels of 2 positions
        >>> fc = Member("fc", IN, 1, ((0, 1, 2, 3), (4, 5, 6, 7)))  # of 4 features each
        >>> channels_of(Group(0, 2, (conv, fc), True))
        4
    """
    widths = [len(m.indices[0]) for m in group.members if m.role != SIZE and m.indices]
    return group.channels * min(widths, default=1)


def reason_key(reason: str) -> str:
    """A group's reason without node names, owner and source: what groups by it share.

    Example:
        >>> reason_key("unsupported op lstm at node lstm_2 in 'enc.rnn'")
        'unsupported op lstm'
        >>> reason_key("the input of conv2d_6 carries no traced channels (at m.py:3: f(x))")
        'the input of conv2d carries no traced channels'
    """
    text = _SOURCE.sub("", reason)
    return _NUMBERED.sub(r"\1", _OWNER.sub("", _NODE.sub("", text)))


def untouched_layers(model: nn.Module, graph: DependencyGraph) -> tuple[tuple[str, str], ...]:
    """(name, class name) of the modules with parameters of their own that no group member
    names: not called, or called by an op no rule reads (their weights are never pruned).

    Example:
        >>> import torch
        >>> from graphs import trace
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc, self.spare = nn.Linear(4, 4), nn.Linear(4, 4)
        ...     def forward(self, x):
        ...         return self.fc(x)
        >>> untouched_layers(Net(), trace(Net(), torch.zeros(1, 4)))
        (('spare', 'Linear'),)
    """
    read = {m.module for g in graph.groups for m in g.members}
    return tuple((name, type(module).__name__) for name, module in model.named_modules()
                 if name not in read and _has_own_parameters(module)
                 and _owner_of_parametrization(name) not in read)


def _owner_of_parametrization(name: str) -> str | None:
    """``conv`` for ``conv.parametrizations.weight``: its layer's members cut its originals."""
    head, found, _ = ("." + name).partition(".parametrizations.")
    return head[1:] if found else None


def warn_if_blocked(model: nn.Module, graph: DependencyGraph, stacklevel: int = 3) -> None:
    """Warn (``BlockedWarning``) when ``blocked_summary`` finds the model ``worrying``: the
    headline, the top 3 reasons, untouched layers, and where to see all."""
    found = blocked_summary(model, graph)
    if found.worrying:
        warnings.warn("\n  ".join(found.lines(top=3) + [SEE_ALL]), BlockedWarning,
                      stacklevel=stacklevel)


def _source(groups: Iterable[Group], sources: dict[str, str]) -> str:
    """The first source line the groups' reasons give (in the text, or the unsupported op's
    node), else ""."""
    for g in groups:
        match, node = _SOURCE.search(g.reason), _NODE.search(g.reason)
        if match:
            return match.group(1)
        if node and node.group(1) in sources:
            return sources[node.group(1)]
    return ""


def _short(source: str, limit: int = 160) -> str:
    return source if len(source) <= limit else source[:limit - 3] + "..."


def _has_own_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


__all__ = ["BOUNDARY", "BlockedSummary", "BlockedWarning", "Blocker", "blocked_summary",
           "channels_of", "reason_key", "untouched_layers", "warn_if_blocked"]
