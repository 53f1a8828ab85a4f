"""A latency target met by removing whole blocks and thinning channels (``depth=True``).

``latency_depth_plan`` takes the channel search of a latency target as a function
(``width_plan(model, graph) -> (plan, search)``: ``surgery.prune`` passes its own) and:

1. with ``LatencyTarget(depth=True)``: runs it on the whole model (width only), and takes the
   importance it removes per millisecond it saves (``surgery.plan.depth.removed_mass``); times
   the model without each removable block, run by run in turn with the dense model
   (``surgery.measure.paired``); picks blocks by importance per measured ms saved while below
   the channels' (``surgery.plan.depth.latency_choice``);
2. with ``remove_blocks=k`` the k least important blocks go first;
3. runs the channel search again on the model without the chosen blocks (their names stay:
   ``surgery.rebuild.blocks``), so the plan's channels are named as in the original model.

The returned search's ``dense_ms`` is the whole model's, timed alongside.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from torch import nn

from graphs.blocks import find_blocks
from graphs.datamodel import DependencyGraph
from graphs.trace import trace
from surgery.measure.flops import count_flops
from surgery.measure.paired import PairedTimer
from surgery.plan.blocks import BlockRemoval, block_scores, least_important
from surgery.plan.depth import latency_choice, removed_mass
from surgery.plan.importance import Importance
from surgery.plan.latency_target import LatencySearch, LatencyTarget
from surgery.plan.plan import Plan
from surgery.rebuild.blocks import remove_blocks

WidthPlan = Callable[[nn.Module, DependencyGraph], tuple[Plan, LatencySearch]]


def latency_depth_plan(model: nn.Module, x: Any, graph: DependencyGraph,
                       importance: Importance, settings: LatencyTarget,
                       removal: BlockRemoval | None, width_plan: WidthPlan
                       ) -> tuple[Plan, LatencySearch]:
    """Blocks and channels for ``settings.target_ms`` (see the module docstring)."""
    blocks = find_blocks(model, x)
    removal = removal or BlockRemoval(0)
    scores = block_scores(model, blocks, x, removal)
    chosen = least_important(scores, removal.count)
    timer = PairedTimer(model, x, settings.device, runs=settings.runs, warmup=3,
                        threads=settings.threads, backend=settings.backend)
    dense = timer.calibrate()
    if settings.depth:
        width, found = width_plan(model, graph)
        layer_macs = count_flops(model, x).by_module
        mass, _ = removed_mass(model, graph, importance, width, layer_macs)
        per_ms = mass / max(found.dense_ms - found.measured_ms, 1e-9)
        saved = {b.module: timer.reference_ms - timer.measure(without(model, [b.module]))
                 for b in blocks if b.module not in chosen}
        chosen = latency_choice(scores, layer_macs, saved, per_ms,
                                dense - settings.target_ms, chosen)
        if not chosen:
            return width, found
    reduced = without(model, chosen)
    plan, found = width_plan(reduced, trace(reduced, x))
    return replace(plan, removed_blocks=chosen), replace(found, dense_ms=timer.reference_ms)


def without(model: nn.Module, blocks: list[str]) -> nn.Module:
    """A copy of ``model`` with ``blocks`` removed (``surgery.rebuild.blocks``).

    Example:
        >>> from torchvision.models import resnet18
        >>> without(resnet18(), ["layer1.0"]).layer1[0]
        Skip()
    """
    reduced = copy.deepcopy(model)
    remove_blocks(reduced, blocks)
    return reduced
