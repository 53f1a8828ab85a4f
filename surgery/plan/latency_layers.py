"""Per-layer latency terms for ``TableLatency``: each conv's share of its groups' blocks, the
time of the ops between the layers, and one measured probe that fits how much of that time
scales with channels.

``benchmarks/latency_model_fit.py`` compares these terms with the additive tables against
measured latencies of width-rounded uniform plans.

Example:
    >>> from surgery.plan.latency_model import TableLatency
    >>> tables = {1: {8: 4.0, 4: 2.0}}
    >>> model = TableLatency(10.0, tables, {"conv": (4.0, (1,))})
    >>> probe = probe_widths(model)
    >>> probe, model.predict(probe)
    ({1: 4}, 8.0)
    >>> fitted = fit_rest(model, {1: 6.0}, probe, measured_ms=6.5)  # 1.5 of the 3 ms possible
    >>> fitted.rest, fitted.predict(probe)
    ({1: 3.0}, 6.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from torch import nn

from graphs.datamodel import Group
from surgery.plan.latency_model import Layers, TableLatency, group_layers, timed_layer


def layer_shares(model: nn.Module, groups: Sequence[Group], shapes: Mapping[str, tuple[int, ...]],
                 tables: Mapping[int, Mapping[int, float]], layer_macs: Mapping[str, int]
                 ) -> Layers:
    """Module -> (its ms, the groups with a table that cut it): for ``TableLatency(layers=)``.
    A layer's ms is its MACs' share of each full-width block it is in, averaged over those
    blocks.

    Example:
        >>> import torch
        >>> from graphs import trace
        >>> from surgery.io.models import LeNet
        >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
        >>> graph = trace(model, x)
        >>> macs = {"conv1": 1, "conv2": 3, "fc1": 1, "fc2": 1, "fc3": 1}
        >>> tables = {g.id: {g.channels: 2.0} for g in graph.prunable}
        >>> layer_shares(model, graph.prunable, {n: (1,) for n in macs}, tables, macs)["conv2"]
        (1.5, (1, 2))
    """
    shares: dict[str, list[float]] = {}
    cutting: dict[str, list[int]] = {}
    for g in groups:
        if g.id not in tables:
            continue
        layers = group_layers(model, g, shapes)
        total = sum(layer_macs.get(x.module, 0) for x in layers)
        full_ms = tables[g.id][max(tables[g.id])]
        for x in layers:
            shares.setdefault(x.module, []).append(
                full_ms * layer_macs.get(x.module, 0) / total if total else 0.0)
            cutting.setdefault(x.module, []).append(g.id)
    return {m: (float(np.mean(ms)), tuple(cutting[m])) for m, ms in shares.items()}


def rest_shares(model: nn.Module, groups: Sequence[Group], shapes: Mapping[str, tuple[int, ...]],
                layers: Layers, layer_macs: Mapping[str, int],
                dense_ms: float) -> dict[int, float]:
    """Group id -> ms of the ops between the layers (norms, activations, adds) that its
    channels carry: for ``TableLatency(rest=)``, saved in proportion to the channels removed.
    That time is the dense model's minus its layers' (``layer_shares``), split by the output
    elements each group's layers produce, over all conv and linear outputs.

    Example:
        >>> import torch
        >>> from graphs import trace
        >>> from surgery import count_flops
        >>> from surgery.io.models import LeNet
        >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
        >>> graph, macs = trace(model, x), count_flops(model, x).by_module
        >>> layers = {"conv1": (1.0, (1,)), "conv2": (2.0, (1, 2)), "fc1": (1.0, (2, 3)),
        ...           "fc2": (0.5, (3, 4)), "fc3": (0.5, (4,))}  # 5 of the 10 ms
        >>> rest = rest_shares(model, graph.prunable, {n: (1,) for n in layers}, layers, macs, 10.0)
        >>> {g: round(ms, 3) for g, ms in rest.items()}  # conv1 makes 3456 of 4694 outputs
        {1: 3.681, 2: 1.091, 3: 0.128, 4: 0.089}
    """
    rest = dense_ms - sum(ms for ms, _ in layers.values())
    outputs = {name: _outputs(module, layer_macs.get(name, 0))
               for name, module in model.named_modules() if timed_layer(module)}
    total = sum(outputs.values())
    if rest <= 0 or total <= 0:
        return {}
    out, cutting = {}, {gid for _, gids in layers.values() for gid in gids}
    for g in groups:
        if g.id in cutting:
            made = sum(outputs.get(x.module, 0) for x in group_layers(model, g, shapes)
                       if any(d == 0 for d, _ in x.cut))
            out[g.id] = rest * made / total
    return out


def _outputs(module: nn.Module, macs: int) -> float:
    """Output elements of a conv or linear layer from its MACs: each output element costs
    the weights feeding one output channel."""
    per = module.weight.numel() / module.weight.shape[0]
    return macs / per if per else 0.0


def probe_widths(model: TableLatency) -> dict[int, int]:
    """Each group at the offered width nearest half its full width: the plan ``fit_rest``
    measures."""
    out = {}
    for gid, table in model.tables.items():
        offered = model.widths(gid)
        if offered:
            out[gid] = min(offered, key=lambda w: (abs(w - max(table) / 2), w))
    return out


def fit_rest(model: TableLatency, rest: Mapping[int, float], probe: Mapping[int, int],
             measured_ms: float) -> TableLatency:
    """``model`` with the ``rest`` term (``rest_shares``) scaled so that the prediction at
    ``probe`` meets its measurement: the share of the ops between the layers that shrinks with
    the channels, between 0 (a fixed cost per op) and 1 (all of it)."""
    without = replace(model, rest=None).predict(probe)
    full = replace(model, rest=rest).predict(probe)
    share = float(np.clip((without - measured_ms) / (without - full), 0.0, 1.0)) \
        if without > full else 0.0
    return replace(model, rest={g: ms * share for g, ms in rest.items()})
