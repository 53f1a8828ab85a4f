"""A pruning plan: per group, which channels go; per module dim, which indices stay. JSON-able."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from graphs.model import Group


def channels_to_remove(channels: int, ratio: float, round_to: int = 1) -> int:
    """floor(ratio*C) channels go; with round_to the kept count is rounded up to a multiple.

    Example:
        >>> channels_to_remove(64, 0.5), channels_to_remove(10, 0.25, round_to=4), \
channels_to_remove(3, 0.9)
        (32, 2, 2)
    """
    remove = min(math.floor(ratio * channels), channels - 1)
    keep = channels - remove
    if round_to > 1:
        keep = min(channels, math.ceil(keep / round_to) * round_to)
    return channels - keep


@dataclass(frozen=True)
class MemberPlan:
    module: str
    role: str
    dim: int
    kept: list[int]
    removed: list[int]


@dataclass(frozen=True)
class GroupPlan:
    group: int
    channels: int
    removed_channels: list[int]  # group channel numbers (0..C-1)
    members: list[MemberPlan]


@dataclass(frozen=True)
class Plan:
    """What to cut: ``to_json()`` gives plain lists and dicts; ``keep()`` the per-module indices."""

    ratio: float
    importance: str
    groups: list[GroupPlan]

    def to_json(self) -> dict:
        return asdict(self)

    def removed(self) -> dict[tuple[str, int], list[int]]:
        """(module, weight dim) -> sorted indices that go, for every dim that loses some."""
        gone: dict[tuple[str, int], set[int]] = {}
        for g in self.groups:
            for m in g.members:
                if m.removed:
                    gone.setdefault((m.module, m.dim), set()).update(m.removed)
        return {key: sorted(v) for key, v in gone.items()}


def plan_group(group: Group, scores: torch.Tensor, n_remove: int) -> GroupPlan:
    """Remove the ``n_remove`` lowest-scoring channels (ties broken by channel number)."""
    order = sorted(range(group.channels), key=lambda c: (float(scores[c]), c))
    gone = sorted(order[:n_remove])
    gone_set = set(gone)
    members = []
    for m in group.members:
        removed = sorted(p for c in gone for p in m.indices[c])
        kept = sorted(p for c in range(group.channels) if c not in gone_set for p in m.indices[c])
        members.append(MemberPlan(m.module, m.role, m.dim, kept, removed))
    return GroupPlan(group.id, group.channels, gone, members)
