"""Turn the channel sets of a trace into groups: coupled channels that touch the same layers."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from graphs.channels import ChannelSets
from graphs.model import Group, Member


def build_groups(sets: ChannelSets) -> tuple[Group, ...]:
    """Components with the same members (and the same block reason) form one group.

    A component is one coupled channel: every (layer, position) it occupies. Components whose
    layers and position counts agree are channels of one group, ordered by their position in the
    group's first member.
    """
    labels = sets.components()
    reasons = _reasons(sets, labels)
    spots = _spots(sets, labels)
    by_signature: dict[tuple, list[int]] = defaultdict(list)
    for label, places in spots.items():
        counts = tuple(sorted((r, len(p)) for r, p in places.items()))
        by_signature[(counts, reasons.get(label, ""))].append(label)
    groups = []
    for (counts, reason), labels_ in by_signature.items():
        first = counts[0][0]
        labels_.sort(key=lambda lab: spots[lab][first][0])
        members = tuple(_member(sets, r, [spots[lab][r] for lab in labels_]) for r, _ in counts)
        groups.append((first, spots[labels_[0]][first][0], members, reason, len(labels_)))
    groups.sort(key=lambda g: (g[0], g[1]))
    return tuple(Group(i, n, members, not reason, reason)
                 for i, (_, _, members, reason, n) in enumerate(groups))


def _reasons(sets: ChannelSets, labels: np.ndarray) -> dict[int, str]:
    reasons: dict[int, str] = {}
    for ids, reason in sets.blocks:
        for label in np.unique(labels[ids]).tolist():
            reasons.setdefault(label, reason)
    return reasons


def _spots(sets: ChannelSets, labels: np.ndarray) -> dict[int, dict[int, list[int]]]:
    """label -> record index -> sorted positions the component occupies in that record."""
    spots: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for r, rec in enumerate(sets.records):
        for label, pos in zip(labels[rec.ids].tolist(), rec.positions.tolist()):
            spots[label][r].append(pos)
    return spots


def _member(sets: ChannelSets, r: int, positions: list[list[int]]) -> Member:
    rec = sets.records[r]
    return Member(rec.module, rec.role, rec.dim, tuple(tuple(p) for p in positions))
