"""prune(): trace -> score -> plan -> rebuild -> lint, on a copy of the user's model."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from graphs.datamodel import DependencyGraph
from graphs.errors import TraceError
from graphs.inputs import split_inputs
from graphs.modes import eval_mode
from graphs.trace import trace
from surgery.errors import SurgeryError
from surgery.io.hf_config import hf_ties
from surgery.measure.block_latency import latency_depth_plan
from surgery.measure.flops import count_flops, count_params
from surgery.measure.latency import measure_latency
from surgery.measure.paired import PairedTimer
from surgery.measure.report import Report, build_report, report_from_plan
from surgery.plan.blocked import warn_if_blocked
from surgery.plan.blocks import BlockRemoval
from surgery.plan.budget import Budget, plan_model
from surgery.plan.depth import plan_depth
from surgery.plan.importance import Criterion, Importance, resolve
from surgery.plan.latency_layers import (
    fit_rest,
    layer_shares,
    probe_widths,
    rest_shares,
)
from surgery.plan.latency_model import (
    TableLatency,
    build_tables,
    cache_path,
    input_shapes,
)
from surgery.plan.latency_target import (
    LatencySearch,
    LatencyTarget,
    plan_from_widths,
    search,
)
from surgery.plan.plan import Plan
from surgery.plan.target import MacModel
from surgery.plan.uniform import make_uniform
from surgery.rebuild.apply import applied_copy, apply_plan
from surgery.rebuild.blocks import remove_blocks as remove_blocks_of
from surgery.rebuild.copying import copy_model, copy_or_explain
from surgery.rebuild.lint import lint


@dataclass
class PruneResult:
    """The pruned model, the plan that made it, and the graph it was planned on."""

    model: nn.Module
    plan: Plan
    graph: DependencyGraph
    params_before: int
    params_after: int
    latency: LatencySearch | None = None  # with target_latency_ms: measured vs target

    def summary(self) -> str:
        kept = self.params_after / max(self.params_before, 1)
        pruned = sum(1 for g in self.plan.groups if g.removed_channels)
        latency = f"; {self.latency}" if self.latency is not None else ""
        blocks = len(self.plan.removed_blocks)
        latency += f"; {blocks} whole blocks removed" if blocks else ""
        return (f"pruned {pruned} of {len(self.graph.groups)} channel groups "
                f"({len(self.graph.groups) - len(self.graph.prunable)} not prunable); "
                f"params {self.params_before:,} -> {self.params_after:,} ({kept:.1%} kept)"
                + latency)

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
          budget: Budget | None = None, latency: LatencyTarget | None = None,
          importance: str | Criterion = "l1", ignore: Iterable[str] = (),
          inplace: bool = False, uniform: bool = False,
          remove_blocks: int | BlockRemoval | None = None) -> PruneResult:
    """Remove floor(ratio*C) channels from every prunable group of C coupled channels.

    Returns a new smaller model (the given one is untouched unless ``inplace=True``). Say how
    much with one of: ``ratio`` (a float, or a dict {module name or group id: ratio});
    ``budget``, a ``surgery.plan.budget.Budget`` (``target_macs=N`` prunes until MACs <= N
    within 2%, ``global_ranking`` ranks all channels together, ``round_to`` keeps multiples,
    ``max_ratio`` caps the fraction of any group removed); or ``latency``, a
    ``surgery.plan.latency_target.LatencyTarget`` (prunes until the model measured on its
    backend, device and threads runs in <= ``target_ms``; ``result.latency`` says where it
    landed). ``uniform=True`` gives every layer of one role (every block's MLP, every attention
    layer's heads) the same width, what a Hugging Face config can express
    (``surgery.plan.uniform``, ``surgery.io.hf.export_hf``). ``remove_blocks=k`` (or a
    ``surgery.plan.blocks.BlockRemoval``) removes the k least important residual blocks whole
    (``result.plan.removed_blocks``); ``Budget(target_macs=T, depth=True)`` weighs removing
    blocks against thinning channels (``surgery.plan.depth``). Warns
    (``surgery.plan.blocked.BlockedWarning``) when less than half of the model's
    channels are prunable or some layers with parameters are read by no rule, naming the top
    reasons.

    Example:
        >>> import torch
        >>> from surgery.io.models import LeNet
        >>> x = torch.zeros(1, 1, 28, 28)
        >>> result = prune(LeNet(), x, ratio=0.5)
        >>> result.model.conv1, result.params_after < result.params_before
        (Conv2d(1, 3, kernel_size=(5, 5), stride=(1, 1)), True)
        >>> small = prune(LeNet(), x, budget=Budget(target_macs=100_000, global_ranking=True))
        >>> 98_000 <= count_flops(small.model, x).total <= 100_000
        True
    """
    removal = BlockRemoval.of(remove_blocks)
    if removal is not None and ratio is None and budget is None and latency is None:
        ratio = 0.0  # whole blocks only
    budget, latency = settings_of(ratio, budget, latency)
    if any(p.is_meta for p in model.parameters()):
        raise SurgeryError("the model's weights are on the meta device (not loaded): load or "
                           "initialise them first (its channels would be ranked on nothing)")
    criterion = resolve(importance)
    # the trace, plan and rebuild make objects by the 100,000; a latency search runs for
    # seconds, building and timing copies: the collector runs there as usual
    with collector_paused() if latency is None else contextlib.nullcontext():
        try:
            graph = trace(model, example_inputs, ignore=ignore)
        except TraceError as exc:
            raise SurgeryError(str(exc)) from exc
        warn_if_blocked(model, graph)  # less than half the channels prunable, or layers unread
        plan, found = _planned(model, example_inputs, graph, criterion, budget, latency, removal)
        if uniform:  # one width per role; a config's derived head size ties heads to the width
            plan = make_uniform(model, graph, plan, criterion, budget.round_to, hf_ties(model))
        params_before = count_params(model)
        # a copy takes the rebuilt layers as they are: the layers surgery cuts are never copied whole
        target = apply_plan(model, plan) if inplace else applied_copy(model, plan, copy_or_explain)
        remove_blocks_of(target, plan.removed_blocks)  # whole residual blocks (surgery.plan.depth)
        problems = lint(target, example_inputs)
        if problems:
            raise SurgeryError("surgery left inconsistent layers (a bug: please report it): "
                               + "; ".join(problems[:5]))
        return PruneResult(target, plan, graph, params_before, count_params(target), found)


def _planned(model: nn.Module, x: Any, graph: DependencyGraph, criterion: Importance,
             budget: Budget, latency: LatencyTarget | None, removal: BlockRemoval | None
             ) -> tuple[Plan, LatencySearch | None]:
    """The plan ``prune`` follows (and the latency search that found it, if any): measured
    against a latency target, by MACs or ratio, with whole blocks where asked."""
    if latency is not None and (removal is not None or latency.depth):
        return latency_depth_plan(model, x, graph, criterion, latency, removal,
                                  lambda m, g: _latency_plan(m, x, g, criterion, latency))
    if latency is not None:
        return _latency_plan(model, x, graph, criterion, latency)
    layer_macs = None if budget.target_macs is None else count_flops(model, x).by_module
    if removal is None and not budget.depth:
        return plan_model(model, graph, budget, criterion, layer_macs), None
    return plan_depth(model, x, graph, budget, criterion, layer_macs, removal), None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused inside the block, then as it was.

    A trace, a plan and a rebuild create small objects by the hundred thousand and free no
    reference cycles that matter, while each automatic collection walks every live object:
    on DenseNet-121 they took 0.15 of the 2.5 forward passes a prune took (``timeit`` pauses
    the collector for the same reason). The old layers surgery replaces are freed by
    reference counting as before; cycles wait for the next collection after the block.

    Example:
        >>> with collector_paused():
        ...     gc.isenabled()
        False
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def settings_of(ratio: float | dict | None, budget: Budget | None,
                latency: LatencyTarget | None) -> tuple[Budget, LatencyTarget | None]:
    """The one budget prune() follows from its ``ratio``, ``budget`` and ``latency`` (exactly
    one of them); a Budget naming ``target_latency_ms`` is measured with the default settings.

    Example:
        >>> settings_of(0.5, None, None)[0].ratio
        0.5
        >>> settings_of(None, None, LatencyTarget(8.0))[0].target_latency_ms
        8.0
    """
    if sum(v is not None for v in (ratio, budget, latency)) != 1:
        raise SurgeryError("give exactly one of ratio=, budget=Budget(...) (e.g. target_macs) "
                           "and latency=LatencyTarget(...)")
    if latency is not None:
        return Budget(target_latency_ms=latency.target_ms), latency
    if budget is None:
        return Budget(ratio=ratio), None
    if budget.target_latency_ms is not None:
        return budget, LatencyTarget(budget.target_latency_ms, depth=budget.depth)
    return budget, None


def _latency_plan(model: nn.Module, x: Any, graph: DependencyGraph, criterion: Importance,
                  settings: LatencyTarget) -> tuple[Plan, LatencySearch]:
    """Measure per-group tables (cached) and search widths until the measured model meets
    the target; the measurement times the rebuilt model on the chosen backend."""
    def block_ms(module: nn.Module, inputs: Any) -> float:
        # blocks last a few ms, shorter than a scheduler slice: their fast 10th percentile
        # is their cost on an idle machine
        return measure_latency(module, inputs, settings.device, runs=settings.runs, warmup=3,
                               threads=settings.threads, backend=settings.backend).p10_ms

    def measure(widths: dict[int, int]) -> float:
        pruned = copy_model(model)
        apply_plan(pruned, plan_from_widths(graph, scores, widths, criterion.name))
        return paired.measure(pruned)

    scores = {g.id: criterion.criterion(model, g) for g in graph.prunable}
    args, kwargs = split_inputs(x)
    with eval_mode(model):
        shapes = input_shapes(model, x, lambda: model(*args, **kwargs))
    path = cache_path(settings.cache_dir, settings.backend, settings.device, settings.threads)
    tables = build_tables(model, graph.prunable, shapes, block_ms, path,
                          progress=settings.progress)
    # the whole model is judged by its median, timed in turn with the dense model: a drift
    # of the machine's speed cancels in their ratio, scaled by the dense median pooled over
    # the whole search
    paired = PairedTimer(model, x, settings.device, runs=settings.runs, warmup=3,
                         threads=settings.threads, backend=settings.backend)
    dense = paired.calibrate()
    layer_macs = count_flops(model, x).by_module
    latency, probes = _fitted_latency(model, graph, shapes, tables, layer_macs, dense, measure)
    found = search({g: scores[g] for g in tables}, latency, settings.target_ms, measure,
                   settings.measure_every, dense_ms=dense,
                   weights=_capacity(model, layer_macs, graph, tables))
    # the dense time pooled over the whole search; the probe counts as a measurement
    found = replace(found, dense_ms=paired.reference_ms,
                    measurements=found.measurements + probes)
    return plan_from_widths(graph, scores, found.widths, criterion.name), found


def _fitted_latency(model: nn.Module, graph: DependencyGraph, shapes: dict, tables: dict,
                    layer_macs: dict[str, int], dense: float,
                    measure: Callable[[dict[int, int]], float]) -> tuple[TableLatency, int]:
    """The latency model the search follows, and how many plans it measured to fit it.

    Each conv keeps the product of its two groups' block speed-ups; the rest of the dense
    time (norms, activations, adds: ops of their own on eager, fused into the convs by
    onnxruntime) shrinks with the channels by a share fitted to one measured plan, every
    group near half width (benchmarks/latency_model_fit.py on the latency_target_s8 curves:
    RMSE of latency kept over uniform plans held out from the fit 0.006-0.045 on eager,
    against 0.106-0.171 for additive tables; on onnxruntime as the product alone)."""
    layers = layer_shares(model, graph.prunable, shapes, tables, layer_macs)
    latency = TableLatency(dense, tables, layers)
    rest = rest_shares(model, graph.prunable, shapes, layers, layer_macs, dense)
    if not rest:  # the layers' blocks already account for the whole dense time
        return latency, 0
    probe = probe_widths(latency)
    return fit_rest(latency, rest, probe, measure(probe)), 1


def _capacity(model: nn.Module, layer_macs: dict[str, int], graph: DependencyGraph,
              gids: Iterable[int]) -> dict[int, float]:
    """Group id -> the MACs one of its channels carries, relative to the mean over ``gids``:
    the latency search's weight of a channel's importance."""
    macs = MacModel(model, layer_macs, graph.prunable, graph.sites)
    per = {g: macs.channel_macs(g) for g in gids}
    mean = sum(per.values()) / max(len(per), 1)
    return {g: n / mean for g, n in per.items()} if mean > 0 else {}


__all__ = ["PruneResult", "prune", "settings_of"]
