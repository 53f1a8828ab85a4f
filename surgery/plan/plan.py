"""A pruning plan: per group, which channels go; per module dim, which indices stay. JSON-able."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from graphs.datamodel import SIZE, Group
from graphs.grouping import positions_array
from surgery.errors import SurgeryError


def channels_to_remove(channels: int, ratio: float, round_to: int = 1) -> int:
    """floor(ratio*C) channels go; with round_to the kept count is rounded up to a multiple.

    Example:
        >>> channels_to_remove(64, 0.5), channels_to_remove(10, 0.25, round_to=4), \
channels_to_remove(3, 0.9)
        (32, 2, 2)
    """
    return round_removal(channels, math.floor(ratio * channels + 1e-9), round_to)


def round_removal(channels: int, remove: int, round_to: int = 1) -> int:
    """Remove at most ``channels - 1``; with round_to the kept count is rounded up to a multiple.

    Example:
        >>> round_removal(120, 36, round_to=8), round_removal(6, 6)
        (32, 5)
    """
    keep = channels - min(remove, channels - 1)
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
    attr: str = ""  # as graphs.datamodel.Member.attr: a parameter, or (role SIZE) an int attribute


@dataclass(frozen=True)
class GroupPlan:
    group: int
    channels: int
    removed_channels: list[int]  # group channel numbers (0..C-1)
    members: list[MemberPlan]


@dataclass(frozen=True)
class Plan:
    """What to cut: ``to_json()`` gives plain lists and dicts (``plan_from_json`` reads them
    back); ``removed()`` the indices that go per module weight dim; ``removed_blocks`` the
    residual blocks that go whole (module names, ``surgery.rebuild.blocks``)."""

    ratio: float
    importance: str
    groups: list[GroupPlan]
    removed_blocks: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    def removed(self) -> dict[tuple[str, int], list[int]]:
        """(layer, weight dim) -> sorted indices that go, for every layer dim that loses some."""
        return {key: sorted(set(gone.tolist())) for key, gone in self.removed_arrays().items()}

    def removed_arrays(self) -> dict[tuple[str, int], np.ndarray]:
        """``removed()`` as int64 arrays, unsorted, an index that two groups remove twice."""
        lists: dict[tuple[str, int], list[list[int]]] = {}
        for g in self.groups:
            for m in g.members:
                if m.removed and not m.attr:
                    lists.setdefault((m.module, m.dim), []).append(m.removed)
        return {key: np.fromiter(itertools.chain.from_iterable(v), dtype=np.int64,
                                 count=sum(map(len, v))) for key, v in lists.items()}

    def removed_params(self) -> dict[tuple[str, str, int], list[int]]:
        """(module, parameter, dim) -> sorted indices that go, for parameters named by members
        (layer scales, class tokens, GPT-2's Conv1D weights)."""
        gone: dict[tuple[str, str, int], set[int]] = {}
        for g in self.groups:
            for m in g.members:
                if m.removed and m.attr and m.role != SIZE:
                    gone.setdefault((m.module, m.attr, m.dim), set()).update(m.removed)
        return {key: sorted(v) for key, v in gone.items()}

    def size_cuts(self) -> dict[tuple[str, str, int], int]:
        """(module, int attribute, element) -> how many of the positions it counts go.

        ``element`` is the member's ``dim``: 0 for an int attribute (``num_heads``), the index
        for a tuple of sizes (``split_indexes``). One attribute may count positions of several
        groups (a prefix slice of channels that go in two groups): the positions that go are
        the union over its members, and a position one member keeps may not go in another.
        """
        kept: dict[tuple[str, str, int], set[int]] = {}
        gone: dict[tuple[str, str, int], set[int]] = {}
        for g in self.groups:
            for m in (m for m in g.members if m.role == SIZE):
                kept.setdefault((m.module, m.attr, m.dim), set()).update(m.kept)
                gone.setdefault((m.module, m.attr, m.dim), set()).update(m.removed)
        for key, positions in gone.items():
            if positions & kept[key]:
                raise SurgeryError(f"the plan both keeps and removes position "
                                   f"{min(positions & kept[key])} of {key[0]}.{key[1]}")
        return {key: len(positions) for key, positions in gone.items()}


def plan_from_json(data: Any) -> Plan:
    """Rebuild a ``Plan`` from ``Plan.to_json()`` output; malformed data raises SurgeryError.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> plan = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5).plan
        >>> plan_from_json(plan.to_json()) == plan
        True
    """
    try:
        groups = [GroupPlan(int(g["group"]), int(g["channels"]),
                            _ints(g["removed_channels"]),
                            [MemberPlan(str(m["module"]), str(m["role"]), int(m["dim"]),
                                        _ints(m["kept"]), _ints(m["removed"]),
                                        _name(m.get("attr", "")))
                             for m in g["members"]])
                  for g in data["groups"]]
        blocks = [_module(b) for b in _strings(data.get("removed_blocks", []))]
        return Plan(float(data["ratio"]), str(data["importance"]), groups, blocks)
    except (KeyError, TypeError, ValueError) as exc:
        raise SurgeryError(f"not a valid pruning plan ({type(exc).__name__}: {exc})") from None


def _name(value: Any) -> str:
    """A member's attribute name: "" or a Python identifier (never a dotted path)."""
    if not isinstance(value, str) or (value and not value.isidentifier()):
        raise TypeError(f"expected an attribute name, got {str(value)[:60]}")
    return value


def _module(value: str) -> str:
    """A module's qualified name: dotted identifiers or list indices (``model.layers.3``)."""
    if not value or not all(p.isidentifier() or p.isdigit() for p in value.split(".")):
        raise TypeError(f"expected a module name, got {value[:60]!r}")
    return value


def _strings(values: Any) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"expected a list of module names, got {str(values)[:60]}")
    return list(values)


def _ints(values: Any) -> list[int]:
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise TypeError(f"expected a list of integers, got {str(values)[:60]}")
    return list(values)


def plan_group(group: Group, scores: torch.Tensor, n_remove: int) -> GroupPlan:
    """Remove the ``n_remove`` lowest-scoring channels (ties broken by channel number)."""
    values = torch.as_tensor(scores).detach().to(torch.float64).cpu().numpy()
    gone = np.sort(np.argsort(values, kind="stable")[:n_remove])  # stable: ties by channel
    stays = np.ones(group.channels, dtype=bool)
    stays[gone] = False
    kept, removed = _one_position_members(group, stays)
    for i, m in enumerate(group.members):
        if i not in kept:  # several positions per channel (heads, packed q/k/v)
            positions = positions_array(m)
            kept[i] = np.sort(positions[stays], None).tolist()
            removed[i] = np.sort(positions[~stays], None).tolist()
    members = [MemberPlan(m.module, m.role, m.dim, kept[i], removed[i], m.attr)
               for i, m in enumerate(group.members)]
    return GroupPlan(group.id, group.channels, gone.tolist(), members)


def _one_position_members(group: Group, stays: np.ndarray) -> tuple[dict, dict]:
    """Member index -> sorted kept and removed positions, for the members with one position
    per channel (most of them), planned together as the rows of one matrix."""
    single = [i for i, m in enumerate(group.members) if m.indices and len(m.indices[0]) == 1]
    if not single:
        return {}, {}
    rows = itertools.chain.from_iterable(group.members[i].indices for i in single)
    matrix = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64,
                         count=len(single) * group.channels).reshape(len(single), -1)
    kept = np.sort(matrix[:, stays], axis=1).tolist()
    removed = np.sort(matrix[:, ~stays], axis=1).tolist()
    return dict(zip(single, kept)), dict(zip(single, removed))
