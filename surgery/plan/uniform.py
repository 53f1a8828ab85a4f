"""One width per role: every layer of the same role keeps the same number of channels.

A Hugging Face config holds one ``intermediate_size`` and one ``num_attention_heads`` for all
layers, so a model it can describe prunes every layer of a role alike. A *role* is the groups
whose producing layers have the same names once the layer index is replaced by ``*``
(``model.layers.*.mlp.up_proj``) and the same channel count: every block's MLP hidden width,
every attention layer's heads (with grouped-query attention one channel is a key/value head
with its query heads, so the ratio num_heads / num_kv_heads stays). ``make_uniform`` gives
every group of a role the mean of the removals planned for the role (rounded to whole
channels, then to ``round_to``) and picks each group's lowest-scored channels again.

A ``Tie`` adds the rule of configs that derive the head size from the width (BERT, GPT-2:
head size = hidden_size / num_attention_heads): the stream keeps heads x head_dim channels,
the smaller of the two in whole heads; a side that cannot prune holds both at full width.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from graphs import trace
    >>> from surgery.plan.budget import Budget, plan_model
    >>> from surgery.plan.importance import resolve
    >>> class Blocks(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 16), nn.ReLU(),
    ...                                                   nn.Linear(16, 8)) for _ in range(2))
    ...     def forward(self, x):
    ...         for layer in self.layers:
    ...             x = x + layer(x)
    ...         return x
    >>> model, x = Blocks(), torch.randn(2, 8)
    >>> graph = trace(model, x)
    >>> plan = plan_model(model, graph, Budget(ratio={"layers.0.0": 0.5}), resolve("l1"))
    >>> [len(g.removed_channels) for g in plan.groups]
    [8, 0]
    >>> uniform = make_uniform(model, graph, plan, resolve("l1"))
    >>> [len(g.removed_channels) for g in uniform.groups]
    [4, 4]
    >>> role_pattern("model.layers.11.mlp.up_proj")
    'model.layers.*.mlp.up_proj'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from graphs.datamodel import OUT, DependencyGraph, Group
from surgery.plan.importance import Importance
from surgery.plan.plan import Plan, plan_group, round_removal


@dataclass(frozen=True)
class Tie:
    """How a config relates the stream's width to the heads. ``exact`` (a config that derives
    the head size from hidden_size / num_attention_heads: BERT, GPT-2): the stream keeps the
    kept heads x ``head_dim`` channels. Else (Llama's config checks that hidden_size is a
    multiple of num_attention_heads): the stream keeps a multiple of the kept query heads.
    ``stream``: a layer producing the stream; ``heads``: the layers whose output channels are
    the heads (a channel is a key/value head with its query heads under grouped-query
    attention); both name patterns where ``*`` is a layer index, matched at the end of a
    qualified name (``"wte"``, ``"h.*.attn.c_attn"``).

    Example:
        >>> Tie.matches("h.*.attn.c_attn", "transformer.h.3.attn.c_attn")
        True
    """

    stream: str
    heads: str
    head_dim: int
    exact: bool = True

    @staticmethod
    def matches(pattern: str, name: str) -> bool:
        """Whether module ``name`` ends with ``pattern`` (``*``: a layer index)."""
        return name_regex(pattern).search(name) is not None


def name_regex(pattern: str) -> re.Pattern:
    """A regex for a name pattern whose ``*`` is a layer index (group 1 onward), matched at
    the end of a qualified name, on whole dotted parts.

    Example:
        >>> name_regex("layers.*.mlp.up_proj").search("model.layers.3.mlp.up_proj").group(1)
        '3'
    """
    body = r"\.".join(r"(\d+)" if part == "*" else re.escape(part)
                      for part in pattern.split("."))
    return re.compile(rf"(?:^|\.){body}$")


def role_pattern(name: str) -> str:
    """A qualified module name with every layer index (a numeric part) replaced by ``*``."""
    return ".".join("*" if part.isdigit() else part for part in name.split("."))


def role_of(group: Group) -> tuple:
    """The role of a group: the name patterns of the layers producing its channels (of all
    its members when none produces them) and its channel count."""
    producers = [m for m in group.members if m.role == OUT] or list(group.members)
    names = frozenset(role_pattern(".".join(p for p in (m.module, m.attr) if p))
                      for m in producers)
    return names, group.channels


def make_uniform(model: nn.Module, graph: DependencyGraph, plan: Plan, importance: Importance,
                 round_to: int = 1, ties: Iterable[Tie] = ()) -> Plan:
    """``plan`` with one removal count per role (the mean of the role's, rounded), then each
    ``Tie`` applied; a group whose count changes keeps its lowest-scored channels by
    ``importance`` (see the module example)."""
    groups = {g.id: g for g in graph.groups}
    planned = {gp.group: len(gp.removed_channels) for gp in plan.groups}
    # the groups of whole blocks that go (plan.removed_blocks) have no say in a role's width
    live = [gid for gid in planned if not within(groups[gid], plan.removed_blocks)]
    counts = {**planned, **role_counts([groups[gid] for gid in live], planned, round_to)}
    for tie in ties:
        counts.update(tied_counts(graph, counts, tie))
    changed = [gp if counts[gp.group] == planned[gp.group] else
               plan_group(groups[gp.group], importance.scores(model, groups[gp.group]),
                          counts[gp.group])
               for gp in plan.groups]
    return Plan(plan.ratio, plan.importance, changed, list(plan.removed_blocks))


def within(group: Group, blocks: Iterable[str]) -> bool:
    """Whether every member of ``group`` is a module inside one of ``blocks``.

    Example:
        >>> from graphs.datamodel import Member
        >>> group = Group(0, 2, (Member("layers.1.fc1", OUT, 0, ((0,), (1,))),), True)
        >>> within(group, ["layers.1"]), within(group, ["layers.10"]), within(group, [])
        (True, False, False)
    """
    prefixes = tuple(f"{b}." for b in blocks)
    return bool(prefixes) and all(m.module.startswith(prefixes) for m in group.members)


def role_counts(groups: list[Group], counts: dict[int, int], round_to: int = 1
                ) -> dict[int, int]:
    """Group id -> removal count, the same for every group of a role: the mean of the role's
    ``counts`` rounded to the nearest whole channel (half up), then to ``round_to``.

    Example:
        >>> from graphs.datamodel import Member
        >>> def mlp(i, n):
        ...     return Group(i, n, (Member(f"layers.{i}.fc1", OUT, 0, ((0,),) * n),), True)
        >>> role_counts([mlp(0, 16), mlp(1, 16), mlp(2, 8)], {0: 8, 1: 3, 2: 2})
        {0: 6, 1: 6, 2: 2}
    """
    roles: dict[tuple, list[Group]] = {}
    for g in groups:
        roles.setdefault(role_of(g), []).append(g)
    out = {}
    for members in roles.values():
        mean = sum(counts[g.id] for g in members) / len(members)
        common = math.floor(mean + 0.5)
        out.update({g.id: round_removal(g.channels, common, round_to) if common else 0
                    for g in members})
    return out


def tied_counts(graph: DependencyGraph, counts: dict[int, int], tie: Tie) -> dict[int, int]:
    """The removal counts of the stream and head groups of ``tie`` (see ``Tie``); nothing is
    removed from a side when the other cannot prune and holds it, and {} when the widths do
    not fit the tie. ``counts``: the planned removals of the prunable groups."""
    stream = [g for g in graph.groups if _produced_by(g, tie.stream)]
    heads = [g for g in graph.groups if _produced_by(g, tie.heads)]
    if len(stream) != 1 or not heads or len({g.channels for g in heads}) != 1:
        return {}  # not the layout the tie describes: leave the plan alone
    stream, full = stream[0], heads[0].channels
    kept = min(g.channels - counts.get(g.id, 0) if g.prunable else g.channels for g in heads)
    width = stream.channels - counts.get(stream.id, 0) if stream.prunable else stream.channels
    if tie.exact:
        if full * tie.head_dim != stream.channels:
            return {}
        if stream.prunable and all(g.prunable for g in heads):
            kept = max(1, min(kept, width // tie.head_dim))
        else:
            kept = full  # one side holds the other at full width
        width = kept * tie.head_dim
    else:
        per = _query_heads(heads[0], tie)  # query heads per channel of a head group
        if not stream.prunable:  # fewer heads, until the stream is a multiple of them
            kept = next(k for k in range(kept, 0, -1) if width % (k * per) == 0)
        width = max(kept * per, width // (kept * per) * (kept * per))
    found = {g.id: g.channels - kept for g in heads if g.prunable}
    if stream.prunable:
        found[stream.id] = stream.channels - width
    return found


def _produced_by(group: Group, pattern: str) -> bool:
    return any(m.role == OUT and Tie.matches(pattern, m.module) for m in group.members)


def _query_heads(group: Group, tie: Tie) -> int:
    """Query heads per channel of a head group: its heads layer's positions per channel over
    the head size."""
    member = next(m for m in group.members if m.role == OUT and Tie.matches(tie.heads, m.module))
    return max(1, len(member.indices[0]) // tie.head_dim)


__all__ = ["Tie", "make_uniform", "name_regex", "role_counts", "role_of", "role_pattern",
           "tied_counts"]
