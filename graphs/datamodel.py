"""The plain data model of a dependency graph: names and integers, no live torch objects.

A *group* is a set of channel dimensions that must be pruned with the same indices. Its C channels
are numbered 0..C-1; each *member* says where channel c sits in one module's weight: at
``member.indices[c]`` along ``member.dim`` (several positions when a Linear reads a flattened
feature map: one channel is H*W input features).
"""

from __future__ import annotations

from dataclasses import dataclass, field

OUT = "out"  # the module produces (or normalises) these channels: weight rows, bias, BN features
IN = "in"  # the module consumes these channels: weight columns
SIZE = "size"  # an int attribute of the module counts these positions (e.g. num_heads);
#                with a tuple of ints (split sizes), element ``dim`` of it does


@dataclass(frozen=True)
class Member:
    """One module dimension in a group: where each of the group's channels sits in it.

    A member with no ``attr`` is a layer's weight dim (the surgeon of the layer slices every
    tensor that goes with it); with ``attr`` it is one parameter of the module (a layer scale,
    a class token) or, with role SIZE, an int attribute that counts the kept positions.

    Example:
        >>> Member("conv1", OUT, 0, ((0,), (1,))).short()
        'conv1.out'
    """

    module: str  # qualified name, as in model.named_modules()
    role: str  # OUT, IN or SIZE
    dim: int  # the dimension of the member's tensor the channels live on
    indices: tuple[tuple[int, ...], ...]  # indices[c] = positions of group channel c
    attr: str = ""  # "": the layer's own weight; else a parameter (OUT) or int attribute (SIZE)

    def short(self) -> str:
        width = len(self.indices[0]) if self.indices else 0
        per = f" x{width}" if width > 1 else ""
        name = ".".join(p for p in (self.module, self.attr) if p)
        return f"{name}.{self.role}{per}"


@dataclass(frozen=True)
class Group:
    """Channels that must be pruned together; ``prunable`` is False with a ``reason`` when not.

    ``inexact`` says why pruning them changes the function even when they are dead (a norm
    over the channels: its statistics change); "" when pruning dead channels is exact.
    """

    id: int
    channels: int
    members: tuple[Member, ...]
    prunable: bool
    reason: str = ""
    inexact: str = ""

    def modules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.module for m in self.members))


@dataclass(frozen=True)
class Unsupported:
    """An op the tracer has no coupling rule for: the channels it touches are not pruned."""

    node: str
    op: str
    module: str  # the owning module's qualified name ("" at top level)
    source: str  # "file:line: code" where fx recorded it, else ""

    def __str__(self) -> str:
        where = f" in {self.module!r}" if self.module else ""
        at = f" at {self.source}" if self.source else ""
        return f"unsupported op {self.op} (node {self.node}){where}{at}"


@dataclass(frozen=True)
class OpSite:
    """An op with MACs of its own outside any weight layer (batched matmul, attention) whose
    operands carry coupled channels (attention heads on a batch dim, a matmul's rows, columns
    or contracted dim), so its MACs scale with the kept positions there: ``size`` positions
    along output dim ``dim`` (None: the contracted dim), of which each channel of group ``g``
    holds ``w`` for every ``(g, w)`` in ``channels``.

    Example:
        >>> site = OpSite("sdpa", "scaled_dot_product_attention", "attn",
        ...               ((1, 3, 5, 4),) * 3, 1, 3, ((2, 1),))
        >>> site.channels
        ((2, 1),)
    """

    node: str
    op: str  # the function or method name: "scaled_dot_product_attention", "matmul", ...
    module: str  # the module whose forward called it ("" at top level)
    shapes: tuple[tuple[int, ...], ...]  # the tensor operands' shapes, in argument order
    dim: int | None  # the output dim the channels sit on; None: contracted away (a @ w, k)
    size: int  # positions along it
    channels: tuple[tuple[int, int], ...]  # (group id, positions per channel of the group)


@dataclass(frozen=True)
class DependencyGraph:
    """What ``graphs.trace`` found: the coupled channel groups of a model.

    Example:
        >>> import torch
        >>> from graphs import trace
        >>> g = trace(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
        ...                               torch.nn.Conv2d(8, 4, 3)), torch.zeros(1, 3, 8, 8))
        >>> [grp.channels for grp in g.groups if grp.prunable]
        [8]
    """

    groups: tuple[Group, ...]
    unsupported: tuple[Unsupported, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())  # e.g. the forward branched on tensor values
    sites: tuple[OpSite, ...] = field(default=())  # MAC ops outside layers with channels

    @property
    def prunable(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.prunable)

    def groups_of(self, module: str) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if module in g.modules())

    def __str__(self) -> str:
        lines = [
            (f"DependencyGraph: {len(self.groups)} groups, {len(self.prunable)} prunable, "
            f"{len(self.unsupported)} unsupported ops")
        ]
        for g in self.groups:
            state = "prunable" if g.prunable else f"not prunable: {g.reason}"
            state += f" (not exact: {g.inexact})" if g.prunable and g.inexact else ""
            lines.append(f"  [{g.id}] {g.channels} channels, {state}")
            lines.append("      " + "  ".join(m.short() for m in g.members))
        lines.extend(f"  ! {u}" for u in self.unsupported)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
