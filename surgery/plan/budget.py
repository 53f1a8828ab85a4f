"""How many channels each group loses: uniform, per-layer, global ranking, or a MAC target.

``Budget`` holds the settings; ``removal_counts`` turns them and the channel scores into a
number of channels to remove per group (``surgery.plan.plan.plan_group`` then picks the lowest-scored
ones). Four modes:

- ``ratio=0.5``: every prunable group of C channels loses floor(0.5*C) (the default mode);
- ``ratio={"conv1": 0.5, "fc1": 0.3}``: per-layer ratios, keyed by a producing module's name
  (or a group id); groups not named are left alone;
- ``ratio=0.5, global_ranking=True``: scores are divided by their group's mean and the
  globally lowest floor(0.5 * all channels) go, keeping at least one channel per group;
- ``target_macs=N``: channels go in ranking order (global, or uniform: each group's weakest
  fraction first) until the model's MACs <= N, skipping a channel whose removal would land
  below 98% of N. MACs of a candidate plan come from ``MacModel``, an analytic model built
  from one fvcore count of the dense model (exact for conv, linear and norm layers).

Example:
    >>> import torch
    >>> from graphs import trace
    >>> from surgery.plan.importance import score
    >>> from surgery.io.models import LeNet
    >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
    >>> graph = trace(model, x)
    >>> scores = {g.id: score(model, g) for g in graph.prunable}
    >>> removal_counts(model, x, graph, scores, Budget(ratio={"conv2": 0.5}))
    {1: 0, 2: 8, 3: 0, 4: 0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from graphs.model import OUT, DependencyGraph, Group
from surgery.errors import SurgeryError
from surgery.layers import indexed_tensor
from surgery.plan.importance import Criterion, score
from surgery.plan.plan import Plan, channels_to_remove, plan_group, round_removal

TOLERANCE = 0.02  # target_macs lands in [(1 - TOLERANCE) * target, target]


@dataclass(frozen=True)
class Budget:
    """Pruning settings: exactly one of ``ratio`` and ``target_macs``."""

    ratio: float | Mapping[str | int, float] | None = None
    global_ranking: bool = False
    target_macs: int | None = None
    round_to: int = 1

    def check(self) -> None:
        """Raise SurgeryError for settings that do not make sense together."""
        if (self.ratio is None) == (self.target_macs is None):
            raise SurgeryError("give exactly one of ratio= and target_macs=")
        if isinstance(self.ratio, Mapping):
            if self.global_ranking:
                raise SurgeryError("per-layer ratios and global_ranking exclude each other")
            for key, value in self.ratio.items():
                _check_ratio(value, f"ratio for {key!r}")
        elif self.ratio is not None:
            _check_ratio(self.ratio, "ratio")
        if self.target_macs is not None:
            if isinstance(self.target_macs, bool) or not isinstance(self.target_macs, int) \
                    or self.target_macs <= 0:
                raise SurgeryError(f"target_macs must be a positive integer, "
                                   f"got {self.target_macs!r}")
            if self.round_to != 1:
                raise SurgeryError("round_to cannot be combined with target_macs")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise SurgeryError(f"round_to must be a positive integer, got {self.round_to!r}")

    def needs_all_scores(self) -> bool:
        return self.global_ranking or self.target_macs is not None

    def recorded_ratio(self, graph: DependencyGraph, counts: dict[int, int]) -> float:
        """The float stored in the plan: the ratio, or the fraction of channels removed."""
        if isinstance(self.ratio, (int, float)) and not self.global_ranking:
            return float(self.ratio)
        total = sum(g.channels for g in graph.prunable)
        return round(sum(counts.values()) / max(total, 1), 6)


def _check_ratio(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise SurgeryError(f"{what} must be in [0, 1), got {value!r}")


def plan_model(model: nn.Module, example_inputs: Any, graph: DependencyGraph, budget: Budget,
               importance: str | Criterion = "l1") -> Plan:
    """Score the prunable groups, decide how many channels each loses, and plan which ones.

    Example:
        >>> import torch
        >>> from graphs import trace
        >>> from surgery.io.models import LeNet
        >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
        >>> plan = plan_model(model, x, trace(model, x), Budget(ratio=0.5, global_ranking=True))
        >>> sum(len(g.removed_channels) for g in plan.groups), plan.ratio
        (113, 0.5)
    """
    budget.check()
    if budget.needs_all_scores() or isinstance(budget.ratio, Mapping):
        scores = {g.id: score(model, g, importance) for g in graph.prunable}
        counts = removal_counts(model, example_inputs, graph, scores, budget)
    else:
        counts = removal_counts(model, example_inputs, graph, {}, budget)
        scores = {g.id: score(model, g, importance) if counts[g.id] else
                  torch.zeros(g.channels) for g in graph.prunable}
    name = importance if isinstance(importance, str) else getattr(importance, "__name__", "custom")
    groups = [plan_group(g, scores[g.id], counts[g.id]) for g in graph.prunable]
    return Plan(budget.recorded_ratio(graph, counts), name, groups)


def removal_counts(model: nn.Module, example_inputs: Any, graph: DependencyGraph,
                   scores: dict[int, torch.Tensor], budget: Budget) -> dict[int, int]:
    """Group id -> number of channels to remove, for every prunable group."""
    groups = graph.prunable
    if budget.target_macs is not None:
        macs = MacModel(model, example_inputs, groups)
        return _fill_to_target(groups, _ranking(groups, scores, budget.global_ranking),
                               macs, budget.target_macs)
    if isinstance(budget.ratio, Mapping):
        ratios = per_group_ratios(groups, budget.ratio)
        return {g.id: channels_to_remove(g.channels, ratios.get(g.id, 0.0), budget.round_to)
                for g in groups}
    if budget.global_ranking:
        return _global_counts(groups, scores, budget.ratio, budget.round_to)
    return {g.id: channels_to_remove(g.channels, budget.ratio, budget.round_to) for g in groups}


def per_group_ratios(groups: tuple[Group, ...], ratios: Mapping[str | int, float]
                     ) -> dict[int, float]:
    """Resolve ``{module name or group id: ratio}`` to ``{group id: ratio}``.

    A name matches the group in which that module produces channels (role ``out``).
    """
    found: dict[int, float] = {}
    for key, value in ratios.items():
        matches = [g for g in groups if g.id == key] if isinstance(key, int) else \
            [g for g in groups if any(m.module == key and m.role == OUT for m in g.members)]
        if not matches:
            names = sorted({m.module for g in groups for m in g.members if m.role == OUT})
            raise SurgeryError(f"ratio names {key!r}, which produces no prunable channels; "
                               f"prunable producers: {', '.join(names[:20])}")
        for g in matches:
            if found.get(g.id, value) != value:
                raise SurgeryError(f"conflicting ratios for group {g.id} "
                                   f"({', '.join(g.modules()[:4])})")
            found[g.id] = value
    return found


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    mean = scores.double().mean()
    return scores.double() / mean if mean > 0 else torch.zeros_like(scores, dtype=torch.float64)


def _ranking(groups: tuple[Group, ...], scores: dict[int, torch.Tensor],
             global_ranking: bool) -> list[tuple[float, int, int]]:
    """(key, group id, rank within the group), lowest key first; channel identity is left to
    ``plan_group``, which removes the k lowest-scored channels of a group."""
    keys = []
    for g in groups:
        s = scores[g.id].double()
        norm = _normalised(s).tolist()
        ordered = sorted(range(g.channels), key=lambda c: (float(s[c]), c))
        for rank, c in enumerate(ordered):
            key = norm[c] if global_ranking else (rank + 1) / g.channels
            keys.append((key, g.id, rank))
    return sorted(keys)


def _global_counts(groups: tuple[Group, ...], scores: dict[int, torch.Tensor],
                   ratio: float, round_to: int) -> dict[int, int]:
    total = sum(g.channels for g in groups)
    budget = math.floor(ratio * total + 1e-9)
    counts = {g.id: 0 for g in groups}
    size = {g.id: g.channels for g in groups}
    for _, gid, _ in _ranking(groups, scores, global_ranking=True):
        if budget == 0:
            break
        if counts[gid] < size[gid] - 1:
            counts[gid] += 1
            budget -= 1
    return {gid: round_removal(size[gid], n, round_to) for gid, n in counts.items()}


def _fill_to_target(groups: tuple[Group, ...], ranking: list[tuple[float, int, int]],
                    macs: MacModel, target: int) -> dict[int, int]:
    """Take channels in ranking order until MACs <= target. A channel that would jump below
    (1 - TOLERANCE) * target is passed over and retried on the next pass; if no channel fits,
    the next one is taken anyway and the latest channels are put back while MACs stay <= target.
    """
    state = _MacState(macs, {g.id: g.channels for g in groups})
    floor = (1 - TOLERANCE) * target
    pending, taken = list(ranking), []
    while state.current > target:
        i = next((i for i, e in enumerate(pending)
                  if state.can_remove(e[1]) and state.after(e[1], +1) >= floor), None)
        if i is None:
            i = next((i for i, e in enumerate(pending) if state.can_remove(e[1])), None)
        if i is None:
            raise SurgeryError(f"cannot reach target_macs={target:,}: pruning stops at "
                               f"{state.current:,.0f} MACs (one channel stays in every group)")
        entry = pending.pop(i)
        taken.append(entry)
        state.change(entry[1], +1)
    for entry in reversed(taken):  # put back what still fits, most important first
        if state.current >= floor:
            break
        if state.after(entry[1], -1) <= target:
            state.change(entry[1], -1)
    return state.counts


class _MacState:
    """Removal counts per group with the MACs they give, updated one channel at a time."""

    def __init__(self, macs: MacModel, size: dict[int, int]):
        self.macs, self.size = macs, size
        self.counts = {gid: 0 for gid in size}
        self.removed = {key: 0 for key in macs.dims}
        self.layer = {name: float(n) for name, (n, _) in macs.layers.items()}
        self.current = float(macs.estimate({}))

    def can_remove(self, gid: int) -> bool:
        return self.counts[gid] < self.size[gid] - 1

    def _layers(self, gid: int, step: int) -> tuple[dict, dict]:
        removed = dict(self.removed)
        for module, dim, width in self.macs.touch[gid]:
            removed[(module, dim)] += step * width
        names = {module for module, _, _ in self.macs.touch[gid] if module in self.layer}
        return removed, {name: self.macs.layer_macs(name, removed) for name in names}

    def after(self, gid: int, step: int) -> float:
        _, layers = self._layers(gid, step)
        return self.current + sum(v - self.layer[name] for name, v in layers.items())

    def change(self, gid: int, step: int) -> None:
        self.current = self.after(gid, step)
        self.removed, layers = self._layers(gid, step)
        self.layer.update(layers)
        self.counts[gid] += step


class MacModel:
    """MACs of the model after removing ``counts[g]`` channels of each group, analytically.

    One fvcore count of the dense model gives each leaf layer's MACs; a layer's MACs scale with
    the kept fraction of every weight dim the plan touches (out channels x in channels for
    conv/linear, channels for depthwise conv and norms). Layers without weights (pooling) are
    kept at their dense count, so the estimate is an upper bound within a few MACs.

    Example:
        >>> import torch
        >>> from graphs import trace
        >>> from surgery.io.models import LeNet
        >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
        >>> macs = MacModel(model, x, trace(model, x).prunable)
        >>> macs.estimate({}), macs.estimate({1: 3})
        (281640, 161640)
    """

    def __init__(self, model: nn.Module, example_inputs: Any, groups: tuple[Group, ...]):
        from surgery.measure.flops import count_flops

        by_module = count_flops(model, example_inputs).by_module
        self.total = by_module.get("", 0)
        self.dims: dict[tuple[str, int], int] = {}  # (module, dim) -> size
        self.touch: dict[int, list[tuple[str, int, int]]] = {}  # group -> (module, dim, width)
        for g in groups:
            self.touch[g.id] = [(m.module, m.dim, len(m.indices[0])) for m in g.members]
            for m in g.members:
                module = model.get_submodule(m.module)
                self.dims[(m.module, m.dim)] = indexed_tensor(module).shape[m.dim]
        self.layers = {name: (n, [key for key in self.dims if key[0] == name])
                       for name, n in by_module.items() if n and name in
                       {module for module, _ in self.dims}}

    def estimate(self, counts: dict[int, int]) -> int:
        """Total MACs with ``counts[g]`` channels removed from group ``g``."""
        removed = {key: 0 for key in self.dims}
        for gid, n in counts.items():
            for module, dim, width in self.touch.get(gid, ()):
                removed[(module, dim)] += n * width
        total = float(self.total)
        for name, (macs, _) in self.layers.items():
            total -= macs - self.layer_macs(name, removed)
        return round(total)

    def layer_macs(self, name: str, removed: dict[tuple[str, int], int]) -> float:
        """MACs of layer ``name`` with ``removed[(module, dim)]`` positions gone per dim."""
        macs, keys = self.layers[name]
        for key in keys:
            macs *= (self.dims[key] - removed[key]) / self.dims[key]
        return macs
