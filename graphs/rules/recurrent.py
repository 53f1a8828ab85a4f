"""Coupling rule for recurrent layers: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` (captured whole).

A hidden unit h is one channel: it owns row h of every gate block of ``weight_ih_l*`` and
``weight_hh_l*`` (and their biases; LSTM has 4 gate blocks i, f, g, o, GRU 3, RNN 1) and column h
of ``weight_hh_l*`` (or of ``weight_hr_l*`` with ``proj_size``, whose rows are the projected
outputs: a second set of channels). ``hidden_size`` (and ``proj_size``) is one attribute for
every layer and direction, so the units of all of them go together: one group. Layer 0's input
features are the upstream channels (``weight_ih_l0`` columns, ``input_size``); a layer above it
reads both directions' outputs. Removing a dead unit is exact: with zero rows its gates are
constant (sigmoid 0.5, tanh 0), its cell and output stay 0 from a zero initial state.

Members name the parameters (``attr``), cut by ``surgery.rebuild.apply.cut_parameter``;
``hidden_size``, ``proj_size`` and ``input_size`` are SIZE members.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> class Tagger(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed, self.rnn = torch.nn.Embedding(10, 6), torch.nn.LSTM(6, 8)
    ...         self.out = torch.nn.Linear(8, 3)
    ...     def forward(self, ids):
    ...         return self.out(self.rnn(self.embed(ids))[0])
    >>> graph = trace(Tagger(), torch.zeros(5, 2, dtype=torch.long))
    >>> units = next(g for g in graph.prunable if "out" in g.modules())
    >>> units.channels, [m.short() for m in units.members][:3]
    (8, ['rnn.weight_ih_l0.out x4', 'rnn.weight_hh_l0.out x4', 'rnn.weight_hh_l0.in'])
"""

from __future__ import annotations

import numpy as np
from torch import fx

from graphs.channels import Flow
from graphs.context import TraceContext, arg
from graphs.datamodel import IN, OUT, SIZE

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def recurrent(ctx: TraceContext, node: fx.Node):
    """Hidden units (and projected outputs) of every layer and direction are one group each."""
    m, name = ctx.module(node), str(node.target)
    x_node, out_shape = arg(node, 0, "input"), _first_shape(ctx, node)
    shape, x = ctx.shape(x_node), ctx.flow(x_node)
    if shape is None or out_shape is None or m.mode not in GATES:
        return ctx.reject(node, type(m).__name__, "a packed sequence or an unknown mode")
    if x is None or x.dim != len(shape) - 1:
        x = ctx.untracked_input(node, x, m.input_size)
    ctx.calls[name] += 1
    hidden = ctx.sets.fresh(m.hidden_size)
    proj = ctx.sets.fresh(m.proj_size) if m.proj_size else hidden
    directions = 2 if m.bidirectional else 1
    for layer in range(m.num_layers):
        below = x.ids if layer == 0 else np.concatenate([proj] * directions)
        for suffix in (f"_l{layer}", f"_l{layer}_reverse")[:directions]:
            _cell(ctx, name, suffix, below, hidden, proj, GATES[m.mode], m)
    ctx.sets.record(name, SIZE, 0, hidden, "hidden_size")
    ctx.sets.record(name, SIZE, 0, x.ids, "input_size")
    if m.proj_size:
        ctx.sets.record(name, SIZE, 0, proj, "proj_size")
    _initial_state(ctx, node, name, m.mode, hidden, proj)
    out = Flow(np.concatenate([proj] * directions), len(out_shape) - 1)
    h = Flow(proj, len(out_shape) - 1)
    return (out, (h, Flow(hidden, len(out_shape) - 1))) if m.mode == "LSTM" else (out, h)


def _cell(ctx: TraceContext, name: str, suffix: str, below: np.ndarray, hidden: np.ndarray,
          proj: np.ndarray, gates: int, m) -> None:
    """The members of one layer and direction: gate rows, input and recurrent columns."""
    rows = np.tile(hidden, gates)
    ctx.sets.record(name, OUT, 0, rows, "weight_ih" + suffix)
    ctx.sets.record(name, IN, 1, below, "weight_ih" + suffix)
    ctx.sets.record(name, OUT, 0, rows, "weight_hh" + suffix)
    ctx.sets.record(name, IN, 1, proj, "weight_hh" + suffix)
    if m.bias:
        ctx.sets.record(name, OUT, 0, rows, "bias_ih" + suffix)
        ctx.sets.record(name, OUT, 0, rows, "bias_hh" + suffix)
    if m.proj_size:
        ctx.sets.record(name, OUT, 0, proj, "weight_hr" + suffix)
        ctx.sets.record(name, IN, 1, hidden, "weight_hr" + suffix)


def _initial_state(ctx: TraceContext, node: fx.Node, name: str, mode: str, hidden: np.ndarray,
                   proj: np.ndarray) -> None:
    """An initial state passed in couples with the units it starts (an encoder's final state);
    one whose width is not traced (made in forward() from a literal size) blocks them."""
    hx = arg(node, 1, "hx")
    if hx is None:
        return
    states = list(hx) if isinstance(hx, (tuple, list)) else [hx]
    for state, ids in zip(states, (proj, hidden) if mode == "LSTM" else (proj,)):
        f = ctx.flow(state)
        if f is not None and f.size == ids.shape[0]:
            ctx.sets.union(f.ids, ids)
        else:
            ctx.sets.block(ids, f"an initial state with untraced units is passed to {name} at "
                                f"node {node.name}")


def _first_shape(ctx: TraceContext, node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    first = meta[0] if isinstance(meta, (tuple, list)) and meta else None
    return tuple(first.shape) if first is not None else None
