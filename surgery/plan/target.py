"""Reach a MAC target: take channels in ranking order until the model's MACs <= target.

MACs of a candidate plan come from ``MacModel``, an analytic model built from one count of
the dense model (``layer_macs``, module name -> MACs) by ``surgery.measure.flops.count_flops``,
the counter the report and the CLI show (fused attention included): exact for conv, linear
and norm layers, whose MACs scale with the kept fraction of every weight dim the plan touches,
for the one matrix of a leaf module that calls a torch function with it (GPT-2's ``Conv1D``,
``addmm`` with its weight: ``scaled_tensor``), and for the ops outside layers that carry
channels (``DependencyGraph.sites``: attention's sdpa or q @ k^T and attn @ v in the scope of a
module no group names), whose MACs scale with the kept heads.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn

from graphs.datamodel import Group, Member, OpSite
from graphs.kinds import indexed_tensor, layer_kind
from surgery.errors import SurgeryError
from surgery.macs import OP_FORMULAS

TOLERANCE = 0.02  # target_macs lands in [(1 - TOLERANCE) * target, target]


def fill_to_target(groups: tuple[Group, ...], ranking: list[tuple[float, int, int]],
                   macs: MacModel, target: int, final: int | None = None) -> dict[int, int]:
    """Take channels in ranking order until MACs <= target. A channel that would jump below
    (1 - TOLERANCE) * target is passed over and retried on the next pass; if no channel fits,
    the next one is taken anyway and the latest channels are put back while MACs stay <= target.
    If that still lands below the window, one group at a time (the latest taken first) gets its
    last channel back and the fill runs again without that group; the first landing wins.

    ``final`` (a later, lower target: a schedule's last step) keeps the plan from closing
    ``final``'s window: when filling on from the planned counts (same ranking) would land
    outside [(1 - TOLERANCE) * final, final], the plan is cut back to the longest prefix of
    its channels (bisection) from which it would not (possibly none). If the window is out of
    reach already, the plan is kept unless it lands below the window (then none).
    """
    zero = {g.id: 0 for g in groups}
    size = {g.id: g.channels for g in groups}
    taken = _fill_repaired(macs, size, ranking, target, zero, strict=True)
    if final is None or final >= target:
        _warn_below(macs.estimate(_counts(zero, taken)), target)
        return _counts(zero, taken)
    lands = _LandsAt(macs, size, ranking, final)
    if lands(zero, taken):
        return _counts(zero, taken)
    if not lands(zero, []):  # out of reach already: only never go below the window
        below = macs.estimate(_counts(zero, taken)) < (1 - TOLERANCE) * final
        return _counts(zero, [] if below else taken)
    ok, bad = 0, len(taken)
    while bad - ok > 1:
        mid = (ok + bad) // 2
        ok, bad = (mid, bad) if lands(zero, taken[:mid]) else (ok, mid)
    return _counts(zero, taken[:ok])


def _counts(base: dict[int, int], taken: list[int]) -> dict[int, int]:
    counts = dict(base)
    for gid in taken:
        counts[gid] += 1
    return counts


def _pending(ranking: list[tuple[float, int, int]], counts: dict[int, int]) -> list:
    """The ranking's entries not yet taken (a group's channels go in rank order)."""
    return [e for e in ranking if e[2] >= counts[e[1]]]


class _LandsAt:
    """Whether filling on to ``final`` from some removed channels lands in its window."""

    def __init__(self, macs: MacModel, size: dict[int, int],
                 ranking: list[tuple[float, int, int]], final: int) -> None:
        self.macs, self.size, self.ranking, self.final = macs, size, ranking, final

    def __call__(self, base: dict[int, int], taken: list[int]) -> bool:
        counts = _counts(base, taken)
        rest = _fill_repaired(self.macs, self.size, self.ranking, self.final, counts,
                              strict=False)
        total = self.macs.estimate(_counts(counts, rest))
        return (1 - TOLERANCE) * self.final <= total <= self.final


def _fill_repaired(macs: MacModel, size: dict[int, int], ranking: list[tuple[float, int, int]],
                   target: int, start: dict[int, int], *, strict: bool) -> list[int]:
    """``_fill`` from ``start``; if it lands below the window, the repair ``fill_to_target``
    describes (a coarse channel taken early can leave only jumps too big to land)."""
    taken = _fill(macs, size, _pending(ranking, start), target, start, strict=strict)
    floor = (1 - TOLERANCE) * target
    if macs.estimate(_counts(start, taken)) >= floor:
        return taken
    for gid in dict.fromkeys(reversed(taken)):  # latest taken first
        j = len(taken) - 1 - taken[::-1].index(gid)
        kept = taken[:j] + taken[j + 1:]
        base = _counts(start, kept)
        pending = [e for e in _pending(ranking, base) if e[1] != gid]
        more = _fill(macs, size, pending, target, base, strict=False)
        if floor <= macs.estimate(_counts(base, more)) <= target:
            return kept + more
    return taken


def _fill(macs: MacModel, size: dict[int, int], pending: list[tuple[float, int, int]],
          target: int, start: dict[int, int], *, strict: bool) -> list[int]:
    """The group ids of the channels the greedy fill takes from ``pending`` (in order, put-backs
    dropped), from ``start`` (removal counts). If the target cannot be reached: an error if
    ``strict``, else what was taken so far."""
    state = _MacState(macs, size)
    for gid, n in start.items():
        for _ in range(n):
            state.change(gid, +1)
    floor = (1 - TOLERANCE) * target
    pending, taken = list(pending), []
    while state.current > target:
        i = next((i for i, e in enumerate(pending)
                  if state.can_remove(e[1]) and state.after(e[1], +1) >= floor), None)
        if i is None:
            i = next((i for i, e in enumerate(pending) if state.can_remove(e[1])), None)
        if i is None:
            if not strict:
                return taken
            raise SurgeryError(f"cannot reach target_macs={target:,}: pruning stops at "
                               f"{state.current:,.0f} MACs (every group keeps one channel, or "
                               f"1 - max_ratio of them)")
        taken.append(pending.pop(i)[1])
        state.change(taken[-1], +1)
    for j in reversed(range(len(taken))):  # put back what still fits, most important first
        if state.current >= floor:
            break
        if state.after(taken[j], -1) <= target:
            state.change(taken[j], -1)
            del taken[j]
    return taken


def _warn_below(current: float, target: int) -> None:
    floor = (1 - TOLERANCE) * target
    if current < floor:
        warnings.warn(f"target_macs={target:,} lands at {current:,.0f} MACs "
                      f"({current / target:.3f}x), below the {TOLERANCE:.0%} band: no "
                      f"channel left to put back fits between {floor:,.0f} and {target:,}",
                      stacklevel=3)


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


def scaled_tensor(model: nn.Module, member: Member) -> torch.Tensor | None:
    """The tensor whose dims scale the MACs of ``member``'s module: a layer kind's indexed
    tensor, or the one matrix of a leaf module that calls a torch function with it (GPT-2's
    ``Conv1D``: ``addmm`` with its weight); None for members that carry no MACs (biases,
    scales, tokens, sizes).

    Example:
        >>> from graphs import trace
        >>> from surgery.io.models import LeNet
        >>> member = trace(LeNet(), torch.zeros(1, 1, 28, 28)).prunable[0].members[0]
        >>> member.module, tuple(scaled_tensor(LeNet(), member).shape)
        ('conv1', (6, 1, 5, 5))
    """
    module = model.get_submodule(member.module)
    if not member.attr:
        return indexed_tensor(module)
    matrices = [name for name, p in module.named_parameters(recurse=False) if p.dim() >= 2]
    if layer_kind(module) is not None or any(True for _ in module.children()) \
            or matrices != [member.attr]:  # a layer's own member counts its MACs
        return None
    return getattr(module, member.attr)


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
        >>> macs.estimate({}), macs.estimate({1: 3}), macs.channel_macs(3)
        (281640, 161640, 340)
    """

    def __init__(self, model: nn.Module, layer_macs: Mapping[str, int],
                 groups: tuple[Group, ...], sites: tuple[OpSite, ...] = ()) -> None:
        self.total = layer_macs.get("", 0)
        self.dims: dict[tuple[str, int], int] = {}  # (module, dim) -> size
        self.touch: dict[int, list[tuple[str, int, int]]] = {}  # group -> (module, dim, width)
        for g in groups:
            weights = [(m, scaled_tensor(model, m)) for m in g.members]
            layers = [(m, w) for m, w in weights if w is not None]
            self.touch[g.id] = [(m.module, m.dim, len(m.indices[0])) for m, _ in layers]
            for m, w in layers:
                self.dims[(m.module, m.dim)] = w.shape[m.dim]
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

    def channel_macs(self, gid: int) -> int:
        """MACs one channel of group ``gid`` carries in the dense model (what removing it
        saves), e.g. LeNet's fc1 (group 3, the class example): 256 in + 84 out = 340."""
        return self.estimate({}) - self.estimate({gid: 1})

    def layer_macs(self, name: str, removed: dict[tuple[str, int], int]) -> float:
        """MACs of layer ``name`` with ``removed[(module, dim)]`` positions gone per dim."""
        macs, keys = self.layers[name]
        for key in keys:
            macs *= (self.dims[key] - removed[key]) / self.dims[key]
        return macs
