"""Reach a latency target: take the channel chunks with the least importance per ms saved.

The search is greedy over a ``LatencyModel`` (``surgery.plan.latency_model``): each step moves
one group to its next allowed width, the group whose removed channels carry the least
importance per predicted millisecond saved. Importance is L1 or another criterion, divided by
the group's mean so groups compare, times the group's ``weights`` (``surgery.prune`` passes the
MACs one channel carries, relative to the mean: a channel's share of the model's capacity
counts, as in a saliency summed over its weights). The real model is measured every
``measure_every`` steps and whenever the prediction reaches the target; each measurement
rescales the prediction (measured / predicted), so the table shapes the choice and the
measurements decide when to stop. After the target is met, the latest steps are put back while
the calibrated prediction stays under the target, and the result is measured again (kept only
if still <= target); while the kept model is more than 5% under the target this is retried, up
to three measurements, each calibrated by the last.

``measure(widths) -> ms`` is passed in by the caller (``surgery.prune`` rebuilds the model and
times it on the backend run by run in turn with the dense model, ``surgery.measure.paired``:
its ratio to the dense model times the dense median pooled over the search), so this module
stays below the rebuild and measure packages. With ``depth=True`` whole residual blocks go
too, where they cost less importance per measured ms than the channels
(``surgery.measure.block_latency``).

Example:
    >>> import torch
    >>> from surgery.plan.latency_model import FakeLatency
    >>> groups = {1: torch.ones(8), 2: torch.ones(8)}
    >>> fake = FakeLatency(10.0, {1: 0.5, 2: 0.1}, {1: 8, 2: 8})
    >>> found = search(groups, fake, 8.0, fake.predict)
    >>> found.widths, found.measured_ms
    ({1: 4, 2: 8}, 8.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from graphs.datamodel import DependencyGraph
from surgery.errors import SurgeryError
from surgery.plan.latency_model import LatencyModel
from surgery.plan.plan import Plan, plan_group

Measure = Callable[[dict[int, int]], float]  # widths -> measured ms
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}  # to milliseconds


@dataclass(frozen=True)
class LatencyTarget:
    """Settings of a latency-targeted prune: target, where it is measured, how often."""

    target_ms: float
    backend: str = "eager"
    device: str = "cpu"
    threads: int = 1
    cache_dir: Path | str | None = None  # None: ~/.cache/model-surgery
    runs: int = 20
    measure_every: int = 8
    progress: bool | str | None = None  # of the latency tables (surgery.progress.resolve)
    depth: bool = False  # remove whole blocks too, by importance per measured ms saved

    def __post_init__(self) -> None:
        if isinstance(self.target_ms, bool) or not isinstance(self.target_ms, (int, float)) \
                or not math.isfinite(self.target_ms) or self.target_ms <= 0:
            raise SurgeryError(f"target_latency_ms must be a positive number of milliseconds, "
                               f"got {self.target_ms!r}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise SurgeryError(f"threads must be an integer >= 1, got {self.threads!r}")


@dataclass(frozen=True)
class LatencySearch:
    """Where the search landed: widths per group, and the measured vs target milliseconds."""

    widths: dict[int, int]
    target_ms: float
    measured_ms: float
    dense_ms: float
    measurements: int

    @property
    def gap(self) -> float:
        """(measured - target) / target: -0.03 is 3% under the target."""
        return (self.measured_ms - self.target_ms) / self.target_ms

    def __str__(self) -> str:
        return (f"latency {self.dense_ms:.2f} -> {self.measured_ms:.2f} ms measured, target "
                f"{self.target_ms:.2f} ms ({self.gap:+.1%}); {self.measurements} measurements")


def search(scores: Mapping[int, torch.Tensor], model: LatencyModel, target_ms: float,
           measure: Measure, measure_every: int = 8, max_measurements: int = 40,
           dense_ms: float | None = None, weights: Mapping[int, float] | None = None
           ) -> LatencySearch:
    """Widths per group with measured latency <= ``target_ms`` (see the module docstring).

    ``scores``: group id -> channel scores; groups the model offers no smaller width stay full.
    ``dense_ms``: the unpruned model's measured latency, if already known. ``weights``: group
    id -> multiplier of its channels' normalised importance (default 1).
    """
    full = {g: len(s) for g, s in scores.items()}
    weights = weights or {}
    costs = {g: [c * weights.get(g, 1.0) for c in _chunk_costs(s)] for g, s in scores.items()}
    widths = dict(full)
    dense = measure(widths) if dense_ms is None else dense_ms
    runs, scale, taken = int(dense_ms is None), dense / model.predict(widths), []
    measured = dense
    while measured > target_ms:
        if runs >= max_measurements:
            raise SurgeryError(f"no plan met {target_ms:.2f} ms within {runs} measurements "
                               f"(last {measured:.2f} ms)")
        steps = 0
        while scale * model.predict(widths) > target_ms and steps < measure_every:
            gid = _best_step(widths, costs, model)
            if gid is None:
                raise SurgeryError(f"cannot reach {target_ms:.2f} ms: every group is at its "
                                   f"smallest width, measured {measured:.2f} ms")
            taken.append((gid, widths[gid]))
            widths[gid] = _next(model, gid, widths[gid])
            steps += 1
        measured, runs = measure(widths), runs + 1
        scale = measured / model.predict(widths)
    widths, measured, runs = _put_back(widths, taken, model, scale, target_ms, measure,
                                       measured, runs)
    return LatencySearch(widths, float(target_ms), measured, dense, runs)


def _put_back(widths: dict[int, int], taken: list[tuple[int, int]], model: LatencyModel,
              scale: float, target_ms: float, measure: Measure, measured: float, runs: int,
              tries: int = 3, slack: float = 0.05) -> tuple[dict[int, int], float, int]:
    """Undo the latest steps while the calibrated prediction stays <= target; keep the result
    only if its measurement is <= target too. Tried again (up to ``tries`` measurements, each
    calibrated by the one before) while the kept model measures more than ``slack`` under the
    target: one noisy reading no longer leaves the model far faster than asked."""
    for attempt in range(tries):
        if attempt and measured >= (1 - slack) * target_ms:
            break
        trial = dict(widths)
        for gid, before in reversed(taken):
            candidate = {**trial, gid: before}
            if trial[gid] < before and scale * model.predict(candidate) <= target_ms:
                trial = candidate
        if trial == widths:
            break
        again, runs = measure(trial), runs + 1
        scale = again / model.predict(trial)
        if again <= target_ms:
            widths, measured = trial, again
    return widths, measured, runs


def _chunk_costs(scores: torch.Tensor) -> list[float]:
    """costs[k]: summed normalised score of the k lowest channels (importance of removing k)."""
    s = torch.as_tensor(scores).double()
    mean = float(s.mean()) if len(s) else 0.0
    ordered = torch.sort(s / mean if mean > 0 else torch.zeros_like(s)).values
    return [0.0] + torch.cumsum(ordered, 0).tolist()


def _next(model: LatencyModel, gid: int, width: int) -> int | None:
    return next((w for w in model.widths(gid) if w < width), None)


def _best_step(widths: dict[int, int], costs: Mapping[int, list[float]], model: LatencyModel
               ) -> int | None:
    """The group whose next chunk costs the least importance per predicted ms saved."""
    now, best, choice = model.predict(widths), None, None
    for gid, width in widths.items():
        nxt = _next(model, gid, width)
        if nxt is None:
            continue
        saved = now - model.predict({**widths, gid: nxt})
        full = len(costs[gid]) - 1
        cost = costs[gid][full - nxt] - costs[gid][full - width]
        key = (saved <= 0, cost / saved if saved > 0 else cost, gid)
        if best is None or key < best:
            best, choice = key, gid
    return choice


def plan_from_widths(graph: DependencyGraph, scores: Mapping[int, torch.Tensor],
                     widths: Mapping[int, int], importance: str, ratio: float | None = None
                     ) -> Plan:
    """A ``Plan`` keeping ``widths[g]`` top-scored channels of each prunable group.

    Example:
        >>> import torch
        >>> from graphs import trace
        >>> from surgery.io.models import LeNet
        >>> graph = trace(LeNet(), torch.zeros(1, 1, 28, 28))
        >>> scores = {g.id: torch.arange(g.channels, dtype=torch.float) for g in graph.prunable}
        >>> plan = plan_from_widths(graph, scores, {1: 2}, "l1")
        >>> plan.groups[0].removed_channels, plan.ratio
        ([0, 1, 2, 3], 0.017699)
    """
    groups = [plan_group(g, scores[g.id], g.channels - widths.get(g.id, g.channels))
              for g in graph.prunable]
    if ratio is None:
        total = sum(g.channels for g in graph.prunable)
        ratio = round(sum(len(g.removed_channels) for g in groups) / max(total, 1), 6)
    return Plan(ratio, importance, groups)


def parse_latency(text: str) -> float:
    """``"12ms"``, ``"0.5 s"``, ``"900us"``, ``"7"`` (a bare number: ms) -> milliseconds.

    Example:
        >>> parse_latency("12ms"), parse_latency("0.5 s"), parse_latency("900us")
        (12.0, 500.0, 0.9)
    """
    number, unit = text.strip().lower(), "ms"
    for suffix in sorted(UNITS, key=len, reverse=True):
        if number.endswith(suffix):
            number, unit = number[:-len(suffix)], suffix
            break
    try:
        value = float(number) * UNITS[unit]
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise SurgeryError(f"a latency target (--target-latency) must be a positive time like "
                           f"12ms, 0.012s or 900us, got {text!r}")
    return value
