"""How many channels each group loses: uniform, per-layer, global ranking, or a MAC target.

``Budget`` holds the settings; ``removal_counts`` turns them and the channel scores into a
number of channels to remove per group (``surgery.plan.plan.plan_group`` then picks the lowest-scored
ones). The modes:

- ``ratio=0.5``: every prunable group of C channels loses floor(0.5*C) (the default mode);
- ``ratio={"conv1": 0.5, "fc1": 0.3}``: per-layer ratios, keyed by a producing module's name
  (or a group id); groups not named are left alone;
- ``ratio=0.5, global_ranking=True``: scores are divided by their group's mean and the
  globally lowest floor(0.5 * all channels) go, keeping at least one channel per group;
- ``target_macs=N, depth=True``: whole residual blocks go too, where they cost less
  importance per MAC than the channels (``surgery.plan.depth``);
- ``target_macs=N``: channels go in ranking order (global, or uniform: each group's weakest
  fraction first) until the model's MACs <= N, skipping a channel whose removal would land
  below 98% of N. MACs of a candidate plan come from ``surgery.plan.target.MacModel``, an
  analytic model built from one fvcore count of the dense model (exact for conv, linear and
  norm layers, and for attention heads pruned in sdpa or batched matmuls outside layers),
  which the caller passes in (``layer_macs``). With ``final_macs`` too (a pruning schedule's
  last target), the plan is cut back where it would leave no way to land within 2% of that
  later target (``surgery.plan.target.fill_to_target``).

In every mode ``max_ratio`` (torch-pruning's ``max_pruning_ratio``) caps what one group loses
at floor(max_ratio * C) channels: a global ranking otherwise may strip a wide layer whose
channels score low after normalisation down to one channel (LeNet's fc1), a bottleneck that
fine-tuning cannot recover. A mapping {group id: fraction} gives the cap per group.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> from surgery.plan.importance import score
    >>> from surgery.io.models import LeNet
    >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
    >>> graph = trace(model, x)
    >>> scores = {g.id: score(model, g) for g in graph.prunable}
    >>> removal_counts(model, graph, scores, Budget(ratio={"conv2": 0.5}))
    {1: 0, 2: 8, 3: 0, 4: 0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from graphs.datamodel import OUT, DependencyGraph, Group
from surgery.errors import SurgeryError
from surgery.plan.importance import Importance
from surgery.plan.plan import Plan, channels_to_remove, plan_group, round_removal
from surgery.plan.target import MacModel, fill_to_target


@dataclass(frozen=True)
class Budget:
    """Pruning settings: exactly one of ``ratio``, ``target_macs`` and ``target_latency_ms``
    (planned by ``surgery.plan.latency_target``, which measures); checked when made."""

    ratio: float | Mapping[str | int, float] | None = None
    global_ranking: bool = False
    target_macs: int | None = None
    round_to: int = 1
    target_latency_ms: float | None = None
    final_macs: int | None = None  # with target_macs: a later target to keep reachable
    max_ratio: float | Mapping[int, float] = 1.0  # the most of one group's channels that go
    depth: bool = False  # with a target: remove whole blocks too (surgery.plan.depth)

    def __post_init__(self) -> None:
        """Every check of the settings, once: a Budget that exists makes sense."""
        given = (self.ratio, self.target_macs, self.target_latency_ms)
        if sum(v is not None for v in given) != 1:
            raise SurgeryError("give exactly one of ratio= and target_macs= (command line: "
                               "pass --ratio R or --target-macs N) or target_latency_ms= "
                               "(--target-latency T)")
        if self.target_latency_ms is not None and (self.round_to != 1 or self.global_ranking
                                                   or self.max_ratio != 1.0):
            raise SurgeryError("target_latency_ms takes channel counts from the measured table "
                               "and ranks globally: leave round_to, global_ranking and "
                               "max_ratio unset")
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
        if self.final_macs is not None and (self.target_macs is None or self.final_macs <= 0):
            raise SurgeryError(f"final_macs (a later target the plan keeps reachable) needs "
                               f"target_macs and must be positive, got {self.final_macs!r}")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise SurgeryError(f"round_to must be a positive integer, got {self.round_to!r}")
        check_max_ratio(self.max_ratio)
        if self.depth and self.target_macs is None and self.target_latency_ms is None:
            raise SurgeryError("depth=True (--depth) weighs removing blocks against thinning "
                               "channels for a target: give target_macs= (--target-macs) or "
                               "target_latency_ms= (--target-latency)")

    def most(self, group: Group) -> int:
        """The most channels ``group`` may lose: floor(max_ratio * C), at most C - 1."""
        cap = self.max_ratio.get(group.id, 1.0) if isinstance(self.max_ratio, Mapping) \
            else self.max_ratio
        return min(group.channels - 1, math.floor(cap * group.channels + 1e-9))

    def needs_all_scores(self) -> bool:
        return self.global_ranking or self.target_macs is not None

    def recorded_ratio(self, graph: DependencyGraph, counts: dict[int, int]) -> float:
        """The float stored in the plan: the ratio, or the fraction of channels removed."""
        if isinstance(self.ratio, (int, float)) and not self.global_ranking:
            return float(self.ratio)
        total = sum(g.channels for g in graph.prunable)
        return round(sum(counts.values()) / max(total, 1), 6)


def check_max_ratio(value: Any) -> None:
    """``max_ratio``: a fraction in (0, 1], or {group id: fraction in [0, 1]}."""
    caps = list(value.values()) if isinstance(value, Mapping) else [value]
    if any(isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c <= 1
           for c in caps) or value == 0:
        raise SurgeryError(f"max_ratio must be in (0, 1] (per group: [0, 1]), got {value!r}")


def _check_ratio(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise SurgeryError(f"{what} must be in [0, 1), got {value!r}")


def plan_model(model: nn.Module, graph: DependencyGraph, budget: Budget,
               importance: Importance, layer_macs: Mapping[str, int] | None = None) -> Plan:
    """Score the prunable groups, decide how many channels each loses, and plan which ones.

    ``layer_macs`` (module name -> MACs of the dense model, ``count_flops(...).by_module``) is
    needed for ``target_macs`` only.

    Example:
        >>> import torch
        >>> from graphs import trace
        >>> from surgery.io.models import LeNet
        >>> from surgery.plan.importance import resolve
        >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
        >>> plan = plan_model(model, trace(model, x), Budget(ratio=0.5, global_ranking=True),
        ...                   resolve("l1"))
        >>> sum(len(g.removed_channels) for g in plan.groups), plan.ratio
        (113, 0.5)
    """
    if budget.needs_all_scores() or isinstance(budget.ratio, Mapping):
        scores = {g.id: importance.scores(model, g) for g in graph.prunable}
        counts = removal_counts(model, graph, scores, budget, layer_macs)
    else:
        counts = removal_counts(model, graph, {}, budget)
        scores = {g.id: importance.scores(model, g) if counts[g.id] else
                  torch.zeros(g.channels) for g in graph.prunable}
    groups = [plan_group(g, scores[g.id], counts[g.id]) for g in graph.prunable]
    return Plan(budget.recorded_ratio(graph, counts), importance.name, groups)


def removal_counts(model: nn.Module, graph: DependencyGraph, scores: dict[int, torch.Tensor],
                   budget: Budget, layer_macs: Mapping[str, int] | None = None
                   ) -> dict[int, int]:
    """Group id -> number of channels to remove, for every prunable group (at most
    ``budget.most(group)``)."""
    groups = graph.prunable
    most = {g.id: budget.most(g) for g in groups}
    if budget.target_latency_ms is not None:
        raise SurgeryError("target_latency_ms is planned by surgery.plan.latency_target (it "
                           "measures the model): call surgery.prune(..., latency=LatencyTarget(T))")
    if budget.target_macs is not None:
        if layer_macs is None:
            raise SurgeryError("target_macs needs the dense model's MACs per layer: pass "
                               "layer_macs=count_flops(model, x).by_module")
        macs = MacModel(model, layer_macs, groups, graph.sites)
        return fill_to_target(groups, _ranking(groups, scores, budget.global_ranking, most),
                              macs, budget.target_macs, budget.final_macs)
    if budget.global_ranking:
        return _global_counts(groups, _ranking(groups, scores, True, most), budget.ratio,
                              budget.round_to)
    ratios = per_group_ratios(groups, budget.ratio) if isinstance(budget.ratio, Mapping) else \
        {g.id: budget.ratio for g in groups}
    return {g.id: min(channels_to_remove(g.channels, ratios.get(g.id, 0.0), budget.round_to),
                      round_removal(g.channels, most[g.id], budget.round_to)) for g in groups}


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
             global_ranking: bool, most: Mapping[int, int]) -> list[tuple[float, int, int]]:
    """(key, group id, rank within the group), lowest key first, for the ``most[g]``
    lowest-scored channels of each group; channel identity is left to ``plan_group``, which
    removes the k lowest-scored channels of a group."""
    keys = []
    for g in groups:
        s = scores[g.id].double()
        norm = _normalised(s).tolist()
        ordered = sorted(range(g.channels), key=lambda c: (float(s[c]), c))
        for rank, c in enumerate(ordered[:most[g.id]]):
            key = norm[c] if global_ranking else (rank + 1) / g.channels
            keys.append((key, g.id, rank))
    return sorted(keys)


def _global_counts(groups: tuple[Group, ...], ranking: list[tuple[float, int, int]],
                   ratio: float, round_to: int) -> dict[int, int]:
    """The globally lowest floor(ratio * all channels) of ``ranking`` (which leaves each
    group at least one channel)."""
    budget = math.floor(ratio * sum(g.channels for g in groups) + 1e-9)
    counts = {g.id: 0 for g in groups}
    for _, gid, _ in ranking[:budget]:
        counts[gid] += 1
    return {g.id: round_removal(g.channels, counts[g.id], round_to) for g in groups}
