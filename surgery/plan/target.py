"""Reach a MAC target: take channels in ranking order until the model's MACs <= target.

MACs of a candidate plan come from ``MacModel``, an analytic model built from one count of
the dense model (``layer_macs``, module name -> MACs) by ``surgery.measure.flops.count_flops``,
the counter the report and the CLI show (fused attention included): exact for conv, linear
and norm layers, whose MACs scale with the kept fraction of every weight dim the plan touches,
and for the ops outside layers that carry channels (``DependencyGraph.sites``: attention's
sdpa or q @ k^T and attn @ v in the scope of a module no group names), whose MACs scale with
the kept heads.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from torch import nn

from graphs.datamodel import Group, OpSite
from surgery.errors import SurgeryError
from surgery.layers import indexed_tensor
from surgery.measure.handles import OP_FORMULAS

TOLERANCE = 0.02  # target_macs lands in [(1 - TOLERANCE) * target, target]


def fill_to_target(groups: tuple[Group, ...], ranking: list[tuple[float, int, int]],
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
    if state.current < floor:
        warnings.warn(f"target_macs={target:,} lands at {state.current:,.0f} MACs "
                      f"({state.current / target:.3f}x), below the {TOLERANCE:.0%} band: no "
                      f"channel left to put back fits between {floor:,.0f} and {target:,}",
                      stacklevel=2)
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
    conv/linear, channels for depthwise conv and norms). An op outside any layer whose output
    carries channels on a batch dim (``sites``: sdpa, batched matmul over attention heads)
    counts ``OP_FORMULAS[op](shapes)`` MACs, scaled by the kept fraction of those positions
    (whole heads shrink q @ k^T and attn @ v alike). Layers without weights (pooling) are
    kept at their dense count, so the estimate is an upper bound within a few MACs.

    Example:
        >>> import torch
        >>> from graphs import trace
        >>> from surgery.io.models import LeNet
        >>> from surgery.measure.flops import count_flops
        >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
        >>> macs = MacModel(model, count_flops(model, x).by_module, trace(model, x).prunable)
        >>> macs.estimate({}), macs.estimate({1: 3})
        (281640, 161640)
    """

    def __init__(self, model: nn.Module, layer_macs: Mapping[str, int],
                 groups: tuple[Group, ...], sites: tuple[OpSite, ...] = ()) -> None:
        self.total = layer_macs.get("", 0)
        self.dims: dict[tuple[str, int], int] = {}  # (module, dim) -> size
        self.touch: dict[int, list[tuple[str, int, int]]] = {}  # group -> (module, dim, width)
        for g in groups:
            layers = [m for m in g.members if not m.attr]  # parameters and sizes: no MACs
            self.touch[g.id] = [(m.module, m.dim, len(m.indices[0])) for m in layers]
            for m in layers:
                module = model.get_submodule(m.module)
                self.dims[(m.module, m.dim)] = indexed_tensor(module).shape[m.dim]
        self.layers = {name: (n, [key for key in self.dims if key[0] == name])
                       for name, n in layer_macs.items() if n and name in
                       {module for module, _ in self.dims}}
        for site in sites:
            self._add_site(site)

    def _add_site(self, site: OpSite) -> None:
        """Model ``site`` as a layer named ``module:node`` with one dim, the channels' dim."""
        touched = [(gid, width) for gid, width in site.channels if gid in self.touch]
        if not touched:
            return
        if site.op not in OP_FORMULAS:
            warnings.warn(f"no MAC formula for {site.op} at node {site.node}: its MACs are "
                          f"taken as they are dense", stacklevel=3)
            return
        name = f"{site.module}:{site.node}"
        self.dims[(name, site.dim)] = site.size
        for gid, width in touched:
            self.touch[gid].append((name, site.dim, width))
        self.layers[name] = (OP_FORMULAS[site.op](site.shapes), [(name, site.dim)])

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
