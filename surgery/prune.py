"""prune(): trace -> score -> plan -> rebuild -> lint, on a copy of the user's model."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from graphs.errors import TraceError
from graphs.model import DependencyGraph
from graphs.trace import trace
from surgery.errors import SurgeryError
from surgery.measure.flops import count_flops, count_params
from surgery.measure.report import Report, build_report, report_from_plan
from surgery.plan.budget import Budget, plan_model
from surgery.plan.importance import Criterion, resolve
from surgery.plan.plan import Plan
from surgery.rebuild.apply import apply_plan
from surgery.rebuild.lint import lint


@dataclass
class PruneResult:
    """The pruned model, the plan that made it, and the graph it was planned on."""

    model: nn.Module
    plan: Plan
    graph: DependencyGraph
    params_before: int
    params_after: int

    def summary(self) -> str:
        kept = self.params_after / max(self.params_before, 1)
        pruned = sum(1 for g in self.plan.groups if g.removed_channels)
        return (f"pruned {pruned} of {len(self.graph.groups)} channel groups "
                f"({len(self.graph.groups) - len(self.graph.prunable)} not prunable); "
                f"params {self.params_before:,} -> {self.params_after:,} ({kept:.1%} kept)")

    def __str__(self) -> str:
        return self.summary()

    def report(self, example_inputs: Any, out: Any = None, *, original: nn.Module | None = None,
               **options: Any) -> Report:
        """A ``surgery.measure.report.Report``: params, MACs, latency and channels per layer.

        Pass the unpruned model as ``original`` to measure its MACs and latency too (without it
        only its params and layer widths are known, from the plan). ``out``: a folder to write
        report.json, report.md and report.png into. ``options``: ``name``, ``timing`` (a
        ``surgery.measure.report.Timing``, or None to skip latency).

        Example:
            >>> import torch
            >>> from surgery.io.models import LeNet
            >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
            >>> r = prune(model, x, ratio=0.5).report(x, original=model, timing=None)
            >>> r.before.macs, r.after.macs, r.after.params
            (281640, 92220, 11418)
        """
        if original is not None:
            result = build_report(original, example_inputs, self.model, **options)
        else:
            result = report_from_plan(self.model, self.plan, self.params_before, example_inputs,
                                      **options)
        if out is not None:
            result.write(out)
        return result


def prune(model: nn.Module, example_inputs: Any, *, ratio: float | dict | None = None,
          importance: str | Criterion = "l1", ignore: Iterable[str] = (), round_to: int = 1,
          inplace: bool = False, global_ranking: bool = False,
          target_macs: int | None = None) -> PruneResult:
    """Remove floor(ratio*C) channels from every prunable group of C coupled channels.

    Returns a new smaller model (the given one is untouched unless ``inplace=True``).
    ``ratio`` may be a dict {module name or group id: ratio}; ``global_ranking=True`` ranks
    all channels together; ``target_macs=N`` prunes until MACs <= N (within 2%). See
    ``surgery.plan.budget``.

    Example:
        >>> import torch
        >>> from surgery.io.models import LeNet
        >>> result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
        >>> result.model.conv1, result.params_after < result.params_before
        (Conv2d(1, 3, kernel_size=(5, 5), stride=(1, 1)), True)
    """
    budget = Budget(ratio, global_ranking, target_macs, round_to)  # checks the settings
    criterion = resolve(importance)
    try:
        graph = trace(model, example_inputs, ignore=ignore)
    except TraceError as exc:
        raise SurgeryError(str(exc)) from exc
    layer_macs = None if target_macs is None else count_flops(model, example_inputs).by_module
    plan = plan_model(model, graph, budget, criterion, layer_macs)
    params_before = count_params(model)
    try:
        target = model if inplace else copy.deepcopy(model)
    except RuntimeError as exc:  # e.g. old-style torch.nn.utils.weight_norm layers
        raise SurgeryError(f"cannot copy the model ({str(exc).split('.')[0]}): replace "
                           f"torch.nn.utils.weight_norm by torch.nn.utils.parametrizations."
                           f"weight_norm, or pass inplace=True") from exc
    apply_plan(target, plan)
    problems = lint(target, example_inputs)
    if problems:
        raise SurgeryError("surgery left inconsistent layers (a bug: please report it): "
                           + "; ".join(problems[:5]))
    return PruneResult(target, plan, graph, params_before, count_params(target))


__all__ = ["PruneResult", "prune"]
