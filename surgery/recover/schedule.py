"""Iterative pruning: n rounds of prune -> fine-tune, reaching the final budget gradually.

With ``target_macs`` the round-i target is geometric between the dense MACs and the final
target (``dense * (target / dense) ** (i / steps)``), so every round removes about the same
fraction of the remaining compute and the last round lands on the target (within 2%). With a
float ``ratio`` each round removes ``1 - (1 - ratio) ** (1 / steps)`` of the current channels
of every group, so the final channel counts are close to (not always exactly) floor(ratio*C)
removed. ``importance="taylor"`` re-scores each round on the current model from ``data``.

Example:
    >>> import torch
    >>> from surgery.io.models import LeNet
    >>> x = torch.zeros(1, 1, 28, 28)
    >>> result = iterative_prune(LeNet(), x, steps=2, target_macs=100_000,
    ...                          finetune=lambda model: None)
    >>> [s.macs <= t for s, t in zip(result.steps, (167_826, 100_000))]
    [True, True]
    >>> 98_000 <= result.steps[-1].macs <= 100_000
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from surgery.errors import SurgeryError
from surgery.measure.flops import count_flops, count_params
from surgery.plan.budget import Budget
from surgery.plan.importance import Criterion
from surgery.plan.plan import Plan
from surgery.plan.taylor import taylor
from surgery.prune import prune

TAYLOR_BATCHES = 8


@dataclass(frozen=True)
class StepRecord:
    """What one round left: its MACs and params, and the accuracy ``evaluate`` gave (or None)."""

    step: int
    macs: int
    params: int
    pruned_accuracy: float | None
    tuned_accuracy: float | None


@dataclass
class ScheduleResult:
    """The final model, each round's plan (relative to the previous round's model) and record."""

    model: nn.Module
    plans: list[Plan]
    steps: list[StepRecord]


def iterative_prune(model: nn.Module, example_inputs: Any, *, steps: int,
                    finetune: Callable[[nn.Module], Any], ratio: float | None = None,
                    target_macs: int | None = None, importance: str | Criterion = "l1",
                    data: Iterable | None = None, global_ranking: bool = False,
                    evaluate: Callable[[nn.Module], float] | None = None,
                    ignore: Iterable[str] = ()) -> ScheduleResult:
    """Prune ``model`` in ``steps`` rounds, calling ``finetune(pruned)`` after each round.

    ``model`` itself is not modified. ``evaluate(model) -> accuracy`` (optional) is called
    before and after each fine-tune and recorded in the StepRecords.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SurgeryError(f"steps must be a positive integer, got {steps!r}")
    Budget(ratio, global_ranking, target_macs)  # checks the settings
    if isinstance(ratio, Mapping):
        raise SurgeryError("iterative_prune takes one ratio for every group, not per-layer ratios")
    if importance == "taylor" and data is None:
        raise SurgeryError("importance='taylor' needs data= (an iterable of (x, y) batches)")
    dense = count_flops(model, example_inputs).total
    current, plans, records = model, [], []
    for i in range(1, steps + 1):
        budget = _step_budget(i, steps, ratio, target_macs, dense)
        criterion = taylor(current, data, max_batches=TAYLOR_BATCHES) \
            if importance == "taylor" else importance
        result = prune(current, example_inputs, importance=criterion, ignore=ignore,
                       budget=Budget(global_ranking=global_ranking, **budget))
        current = result.model
        pruned_acc = evaluate(current) if evaluate else None
        finetune(current)
        records.append(StepRecord(i, count_flops(current, example_inputs).total,
                                  count_params(current), pruned_acc,
                                  evaluate(current) if evaluate else None))
        plans.append(result.plan)
    return ScheduleResult(current, plans, records)


def _step_budget(i: int, steps: int, ratio: float | None, target_macs: int | None,
                 dense: int) -> dict:
    if target_macs is not None:
        if target_macs >= dense:
            raise SurgeryError(f"target_macs={target_macs:,} is not below the model's "
                               f"{dense:,} MACs")
        return {"target_macs": round(dense * (target_macs / dense) ** (i / steps))}
    return {"ratio": 1 - (1 - ratio) ** (1 / steps)}
