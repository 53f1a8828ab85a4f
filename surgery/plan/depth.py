"""Plans that remove whole blocks, alone or with channels: depth against width.

``plan_depth`` picks blocks (``graphs.blocks``) and plans channels for the rest of the model:
the graph and the dense MAC table are *restricted* to what stays (the groups' members inside a
removed block go, the block's MACs leave every container holding it), so the channel plan,
its MAC model and ``Plan.removed()`` never name a module that is gone.

- ``remove_blocks=k`` (``BlockRemoval``): the k least important blocks, then the channels the
  budget asks for (a ratio, or a MAC target counted on the model without those blocks);
- ``Budget(target_macs=T, depth=True)``: blocks and channels are compared by importance per
  MAC. A channel's importance is its score over its group's mean, times the MACs it carries;
  a block's its score over the mean block score, times its MACs; both are relative to the
  average unit of their kind, so an average block weighs as much as average channels of the
  same MACs. Blocks are taken, least important first, while a block's importance per MAC
  is below that of the channels the MAC target would otherwise remove (their MAC-weighted
  mean) and the block alone does not take the model below the target's 2% window; then
  the channels fill the rest. With ``remove_blocks=BlockRemoval(k, importance)`` too, the
  k least important blocks go first and ``importance`` ranks the blocks.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from graphs import trace
    >>> from surgery.measure.flops import count_flops
    >>> from surgery.plan.budget import Budget
    >>> from surgery.plan.importance import resolve
    >>> model, x = resnet18().eval(), torch.zeros(1, 3, 32, 32)
    >>> macs = count_flops(model, x).by_module
    >>> plan = plan_depth(model, x, trace(model, x), Budget(ratio=0.0), resolve("l1"), macs,
    ...                   BlockRemoval(1))
    >>> plan.removed_blocks, plan.removed()
    (['layer1.0'], {})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from graphs.blocks import find_blocks
from graphs.datamodel import OUT, DependencyGraph
from surgery.errors import SurgeryError
from surgery.plan.blocks import BlockRemoval, block_scores, least_important
from surgery.plan.budget import Budget, plan_model
from surgery.plan.importance import Importance
from surgery.plan.plan import Plan
from surgery.plan.target import TOLERANCE, MacModel


def plan_depth(model: nn.Module, example_inputs: Any, graph: DependencyGraph, budget: Budget,
               importance: Importance, layer_macs: Mapping[str, int] | None,
               removal: BlockRemoval | None) -> Plan:
    """Blocks to remove and channels to prune (see the module docstring)."""
    blocks = find_blocks(model, example_inputs)
    settings = removal or BlockRemoval(0)
    scores = block_scores(model, blocks, example_inputs, settings)
    chosen = least_important(scores, settings.count)
    if budget.depth:
        chosen = _depth_choice(model, graph, budget, importance, layer_macs, scores, chosen)
    return plan_without(model, graph, budget, importance, layer_macs, chosen)


def plan_without(model: nn.Module, graph: DependencyGraph, budget: Budget,
                 importance: Importance, layer_macs: Mapping[str, int] | None,
                 blocks: Sequence[str]) -> Plan:
    """The channel plan ``budget`` asks for on the model without ``blocks``, which it names in
    ``removed_blocks`` (``layer_macs``: needed for a MAC target only)."""
    kept, macs = restrict(graph, layer_macs or {}, blocks)
    plan = plan_model(model, kept, replace(budget, depth=False), importance,
                      None if layer_macs is None else macs)
    return replace(plan, removed_blocks=list(blocks))


def restrict(graph: DependencyGraph, layer_macs: Mapping[str, int], blocks: Sequence[str]
             ) -> tuple[DependencyGraph, dict[str, int]]:
    """``graph`` and ``layer_macs`` without the modules inside ``blocks``: members inside go
    (a group left with no producer goes), as do op sites; each block's MACs leave the
    containers that hold it and the total.

    Example:
        >>> from graphs.datamodel import Group, Member
        >>> g = DependencyGraph((Group(1, 2, (Member("a.conv", "out", 0, ((0,), (1,))),
        ...                                   Member("b", "in", 1, ((0,), (1,)))), True),))
        >>> kept, macs = restrict(g, {"": 10, "a": 4, "a.conv": 4, "b": 6}, ["a"])
        >>> kept.groups, macs
        ((), {'': 6, 'b': 6})
    """
    def inside(name: str) -> bool:
        return any(name == b or name.startswith(b + ".") for b in blocks)

    groups = []
    for g in graph.groups:
        members = tuple(m for m in g.members if not inside(m.module))
        if len(members) == len(g.members):
            groups.append(g)
        elif any(m.role == OUT and not m.attr for m in members):
            groups.append(replace(g, members=members))
    sites = tuple(s for s in graph.sites if not inside(s.module))
    macs = {k: v for k, v in layer_macs.items() if not inside(k)}
    for block in blocks:
        for key in macs:
            if key == "" or block.startswith(key + "."):
                macs[key] -= layer_macs.get(block, 0)
    return replace(graph, groups=tuple(groups), sites=sites), macs


def _depth_choice(model: nn.Module, graph: DependencyGraph, budget: Budget,
                  importance: Importance, layer_macs: Mapping[str, int],
                  scores: Mapping[str, float], first: list[str]) -> list[str]:
    """``first``, then the blocks taken while their importance per MAC is below the
    channels' (module docstring)."""
    if budget.target_macs is None:
        raise SurgeryError("depth=True chooses between blocks and channels for a target: "
                           "give target_macs (or a latency target)")
    finite = [s for s in scores.values() if s < float("inf")]
    mean = sum(finite) / len(finite) if finite else 0.0
    chosen = list(first)
    for name in sorted((n for n in scores if n not in first), key=lambda n: scores[n]):
        if mean <= 0 or scores[name] == float("inf"):
            break
        _, macs = restrict(graph, layer_macs, chosen + [name])
        if macs[""] < (1 - TOLERANCE) * budget.target_macs:
            continue  # this block alone overshoots the target: a smaller one may fit
        if scores[name] / mean >= channel_cost(model, graph, budget, importance, layer_macs,
                                              chosen):
            break
        chosen.append(name)
    return chosen


def channel_cost(model: nn.Module, graph: DependencyGraph, budget: Budget,
                 importance: Importance, layer_macs: Mapping[str, int],
                 blocks: Sequence[str]) -> float:
    """The MAC-weighted mean normalised score of the channels the budget removes from the
    model without ``blocks`` (0 when it removes none): their importance per MAC."""
    kept, macs = restrict(graph, layer_macs, blocks)
    plan = plan_model(model, kept, replace(budget, depth=False), importance, macs)
    weighted, total = removed_mass(model, kept, importance, plan, macs)
    return weighted / total if total else 0.0


def removed_mass(model: nn.Module, graph: DependencyGraph, importance: Importance, plan: Plan,
                 layer_macs: Mapping[str, int]) -> tuple[float, float]:
    """(sum over removed channels of score / group mean * MACs the channel carries, the MACs
    they carry): the importance the plan removes, in a block's units (score / mean block
    score * block MACs)."""
    mac_model = MacModel(model, layer_macs, graph.prunable, graph.sites)
    by_id = {g.id: g for g in graph.prunable}
    weighted = total = 0.0
    for gp in (g for g in plan.groups if g.removed_channels and g.group in by_id):
        s = importance.scores(model, by_id[gp.group]).double()
        mean = float(s.mean())
        per = mac_model.channel_macs(gp.group)
        r = s[torch.as_tensor(gp.removed_channels)] / mean if mean > 0 else torch.zeros(1)
        weighted += float(r.sum()) * per
        total += per * len(gp.removed_channels)
    return weighted, total


def latency_choice(scores: Mapping[str, float], block_macs: Mapping[str, int],
                   saved_ms: Mapping[str, float], per_ms: float, needed_ms: float,
                   first: Sequence[str] = ()) -> list[str]:
    """``first``, then blocks by importance per measured ms saved (score / mean block score *
    block MACs / ms), least first, while below ``per_ms`` (the width-only plan's removed
    importance per ms it saved) and the savings stay within ``needed_ms``.

    Example:
        >>> latency_choice({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 10, "b": 10, "c": 10},
        ...                {"a": 2.0, "b": 0.5, "c": 1.0}, per_ms=12.0, needed_ms=2.5)
        ['a']
    """
    finite = [s for s in scores.values() if s < float("inf")]
    mean = sum(finite) / len(finite) if finite else 0.0
    chosen, spent = list(first), sum(saved_ms.get(b, 0.0) for b in first)
    keys = {n: scores[n] / mean * block_macs.get(n, 0) / saved_ms[n] for n in saved_ms
            if n not in first and saved_ms[n] > 0 and mean > 0 and scores[n] < float("inf")}
    for name in sorted(keys, key=lambda n: keys[n]):
        if keys[name] >= per_ms:
            break
        if spent + saved_ms[name] <= needed_ms:
            chosen.append(name)
            spent += saved_ms[name]
    return chosen
