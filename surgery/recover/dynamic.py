"""Prune during training (SEVENdyn): shrink the model on a schedule, carrying the optimizer.

``DynamicPruner`` is called after every ``optimizer.step()``. Between pruning steps it
accumulates a per-weight saliency from the gradients (``surgery.plan.saliency``: "seven",
"taylor", "hessian"; "l1" and the other ``surgery.plan.importance`` names need none). At a
pruning step it prunes ``model`` in place (its layers replaced by smaller ones) and rewrites the
optimizer in place (``surgery.recover.optim_state``): param groups and their options kept,
momentum / Adam moments sliced to the kept channels, ``step`` counts kept, an LR scheduler
stays bound.

Schedule: pruning steps at ``start + every, start + 2 * every, ...`` up to ``end`` (``end``
always included); the fraction of the final removal reached at step t is, with
``p = (t - start) / (end - start)``: cubic ``1 - (1 - p) ** 3`` (Zhu & Gupta 2017, as SEVEN),
linear ``p``; one-shot prunes everything once, at ``end``. With ``ratio`` every group loses
floor(fraction * ratio * C) of its dense C channels by step t (exactly floor(ratio * C) at the
end; with ``global_ranking`` the fraction is of all channels); with ``target_macs`` the MACs
fall by the fraction of (dense - target); before the last step, a step is skipped when it is
smaller than the 2% MAC tolerance, and a step's plan is cut back where it would leave no way to
land inside the final target's 2% window (``Budget.final_macs``: channels left late in the
schedule can be coarse, and a greedy step could strand the model between two reachable sizes).
``max_ratio`` caps what a group loses over the whole schedule at that fraction of its dense
channels (see ``surgery.plan.budget``).

Under DDP (pass the ``DistributedDataParallel`` wrapper) the accumulated scores are all-reduced
(averaged) before ranking, so every rank removes the same channels, and the wrapper is rebuilt
around the shrunk module: train with ``pruner.model`` after each step.

Example:
    >>> import torch
    >>> from surgery.io.models import LeNet
    >>> model = LeNet()
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    >>> pruner = DynamicPruner(model, torch.zeros(1, 1, 28, 28), opt, ratio=0.5, end=4, every=2)
    >>> for _ in range(4):
    ...     opt.zero_grad()
    ...     loss = pruner.model(torch.randn(8, 1, 28, 28)).logsumexp(1).mean()
    ...     loss.backward()
    ...     opt.step()
    ...     _ = pruner.step()
    >>> [(e.step, e.fraction) for e in pruner.events], model.conv1.out_channels
    ([(2, 0.875), (4, 1.0)], 3)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from graphs.errors import TraceError
from graphs.trace import trace
from surgery.errors import SurgeryError
from surgery.measure.flops import count_flops, count_params
from surgery.plan.budget import Budget, check_max_ratio, plan_model
from surgery.plan.importance import CRITERIA, resolve
from surgery.plan.saliency import ACCUMULATORS, criterion, make_accumulator
from surgery.plan.target import TOLERANCE
from surgery.rebuild.lint import lint
from surgery.recover.optim_state import apply_with_optimizer, slice_named

SCHEDULES: dict[str, Callable[[float], float]] = {
    "cubic": lambda p: 1 - (1 - p) ** 3,
    "linear": lambda p: p,
    "one-shot": lambda p: 1.0,
}


@dataclass(frozen=True)
class Settings:
    """When and how much to prune; exactly one of ``ratio`` and ``target_macs``."""

    ratio: float | None = None
    target_macs: int | None = None
    importance: str = "seven"
    schedule: str = "cubic"
    start: int = 0
    end: int = 1
    every: int = 1
    global_ranking: bool = False
    max_ratio: float = 1.0

    def check(self) -> None:
        if (self.ratio is None) == (self.target_macs is None):
            raise SurgeryError("give exactly one of ratio= and target_macs=")
        check_max_ratio(self.max_ratio)
        if self.ratio is not None and not 0 <= self.ratio < 1:
            raise SurgeryError(f"ratio must be in [0, 1), got {self.ratio!r}")
        if self.schedule not in SCHEDULES:
            raise SurgeryError(f"unknown schedule {self.schedule!r}: choose one of "
                               f"{', '.join(SCHEDULES)}")
        if self.importance not in ACCUMULATORS and self.importance not in CRITERIA:
            raise SurgeryError(f"unknown importance {self.importance!r}: choose one of "
                               f"{', '.join(sorted({*ACCUMULATORS, *CRITERIA}))}")
        if not (0 <= self.start < self.end and self.every >= 1):
            raise SurgeryError(f"need 0 <= start < end and every >= 1, got start={self.start}, "
                               f"end={self.end}, every={self.every}")

    def pruning_steps(self) -> list[int]:
        """The optimizer steps (counted from 1) after which the model is pruned."""
        if self.schedule == "one-shot":
            return [self.end]
        return sorted({*range(self.start + self.every, self.end, self.every), self.end})

    def fraction(self, t: int) -> float:
        """Fraction of the final removal reached after step ``t``."""
        p = min(max((t - self.start) / (self.end - self.start), 0.0), 1.0)
        return SCHEDULES[self.schedule](p)


@dataclass(frozen=True)
class Event:
    """One pruning step: after which optimizer step, the schedule's fraction, what was left."""

    step: int
    fraction: float
    macs: int
    params: int


class DynamicPruner:
    """Prune ``model`` while it trains; call ``step()`` after each ``optimizer.step()``.

    ``model`` may be a ``DistributedDataParallel`` wrapper; ``pruner.model`` is then the
    current wrapper (rebuilt after each pruning step). ``scheduler`` (optional) is only
    checked to be bound to ``optimizer``: rewriting the optimizer in place keeps it bound.
    ``example_inputs`` are read as ``prune`` reads them (a tensor, positional inputs, keyword
    inputs such as ``{"input_ids": ids, "use_cache": False}``, any pytree below).
    """

    def __init__(self, model: nn.Module, example_inputs: Any, optimizer: torch.optim.Optimizer,
                 *, ratio: float | None = None, target_macs: int | None = None,
                 importance: str = "seven", schedule: str = "cubic", start: int = 0,
                 end: int = 1, every: int = 1, scheduler: Any = None,
                 global_ranking: bool = False, max_ratio: float = 1.0) -> None:
        self.settings = Settings(ratio, target_macs, importance, schedule, start, end, every,
                                 global_ranking, max_ratio)
        self.settings.check()
        if scheduler is not None and getattr(scheduler, "optimizer", optimizer) is not optimizer:
            raise SurgeryError("the scheduler is bound to another optimizer")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.example_inputs = example_inputs
        self.t = 0
        self.events: list[Event] = []
        self.accumulator = make_accumulator(importance) if importance in ACCUMULATORS else None
        self._todo = self.settings.pruning_steps()
        self._dense_macs = count_flops(self.module, example_inputs).total
        self._dense_channels = {_key(g): g.channels for g in self._groups()}

    @property
    def module(self) -> nn.Module:
        """The model being pruned (inside its DDP wrapper, if any)."""
        return self.model.module if isinstance(self.model, DistributedDataParallel) \
            else self.model

    def step(self) -> bool:
        """Count one optimizer step, accumulate scores; prune if this is a pruning step.

        Returns True when the model was pruned (its layers and the optimizer's params changed).
        """
        self.t += 1
        if self.accumulator is not None and self.t > self.settings.start:
            self.accumulator.update(self.module)
        if self.t not in self._todo:
            return False
        fraction = self.settings.fraction(self.t)
        budget = self._budget(fraction)
        pruned = budget is not None and self._shrink(budget)
        self.events.append(Event(self.t, fraction, count_flops(self.module,
                                                               self.example_inputs).total,
                                 count_params(self.module)))
        return pruned

    def _budget(self, fraction: float) -> dict | None:
        """prune() keywords reaching ``fraction`` of the final removal; None if nothing to do."""
        s = self.settings
        if s.target_macs is not None:
            goal = round(self._dense_macs - fraction * (self._dense_macs - s.target_macs))
            current = count_flops(self.module, self.example_inputs).total
            # a step smaller than target_macs' 2% tolerance would overshoot: wait (not at end)
            small = current - goal < TOLERANCE * current and self.t < self._todo[-1]
            return {"target_macs": goal, "global_ranking": s.global_ranking,
                    "final_macs": s.target_macs} if goal < current and not small else None
        groups = self._groups()
        if s.global_ranking:
            dense = sum(self._dense_channels.values())
            now = sum(g.channels for g in groups)
            remove = int(fraction * s.ratio * dense + 1e-9) - (dense - now)
            return {"ratio": remove / now, "global_ranking": True} if remove > 0 else None
        ratios = {}
        for g in groups:
            dense = self._dense_channels.get(_key(g), g.channels)
            remove = int(fraction * s.ratio * dense + 1e-9) - (dense - g.channels)
            if remove > 0:
                ratios[g.id] = remove / g.channels
        return {"ratio": ratios} if ratios else None

    def _caps(self, groups) -> dict[int, float]:
        """Group id -> the fraction of its current channels that may still go, so that no
        group loses more than ``max_ratio`` of its dense channels over the whole schedule."""
        caps = {}
        for g in groups:
            dense = self._dense_channels.get(_key(g), g.channels)
            allowed = int(self.settings.max_ratio * dense + 1e-9) - (dense - g.channels)
            caps[g.id] = max(allowed, 0) / g.channels
        return caps

    def _shrink(self, budget: dict) -> bool:
        """Plan with ``budget`` and apply it (model and optimizer, in place); False when the
        plan removes nothing (cut back to keep the final MAC target reachable)."""
        importance = self.settings.importance
        if self.accumulator is not None:
            importance = criterion(_all_reduced(self.accumulator.totals), importance)
        x = self.example_inputs
        graph = self._graph()
        if self.settings.max_ratio < 1:
            budget = {**budget, "max_ratio": self._caps(graph.prunable)}
        layer_macs = count_flops(self.module, x).by_module if "target_macs" in budget else None
        plan = plan_model(self.module, graph, Budget(**budget), resolve(importance), layer_macs)
        if not any(g.removed_channels for g in plan.groups):
            return False
        kept = apply_with_optimizer(self.module, plan, self.optimizer)
        problems = lint(self.module, x)
        if problems:
            raise SurgeryError("surgery left inconsistent layers (a bug: please report it): "
                               + "; ".join(problems[:5]))
        shapes = {n: p.shape for n, p in self.module.named_parameters()}
        if self.accumulator is not None:
            self.accumulator.map_tensors(lambda d: slice_named(d, kept, shapes))
            self.accumulator.reset()
        if isinstance(self.model, DistributedDataParallel):
            self.model = _rewrap(self.model)
        return True

    def _graph(self):
        try:
            return trace(self.module, self.example_inputs)
        except TraceError as exc:
            raise SurgeryError(str(exc)) from exc

    def _groups(self):
        return self._graph().prunable


def _key(group) -> tuple:
    """A group's identity across re-traces of a pruned model: its members' (module, attr,
    role, dim)."""
    return tuple(sorted({(m.module, m.attr, m.role, m.dim) for m in group.members}))


def _all_reduced(totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Under torch.distributed: every rank's totals averaged (same order on every rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return totals
    world = dist.get_world_size()
    reduced = {}
    for name in sorted(totals):
        t = totals[name].clone()
        dist.all_reduce(t)
        reduced[name] = t / world
    return reduced


def _rewrap(ddp: DistributedDataParallel) -> DistributedDataParallel:
    """A new DDP wrapper around the (shrunk) module, with the old wrapper's settings."""
    options = {"device_ids": ddp.device_ids, "output_device": ddp.output_device,
               "process_group": ddp.process_group,
               "find_unused_parameters": ddp.find_unused_parameters}
    if not ddp.broadcast_buffers:  # passed only when set: the keyword is being deprecated
        options["broadcast_buffers"] = False
    return DistributedDataParallel(ddp.module, **options)
