"""Check every producer/consumer channel count of a model on example inputs, like fx's Graph.lint.

Example:
    >>> import torch
    >>> from torch import nn
    >>> bad = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(4))
    >>> lint(bad, torch.zeros(1, 3, 8, 8))
    ['1 (BatchNorm2d) expects 4 channels on dim 1, gets 8']
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from graphs.inputs import split_inputs
from graphs.shapes import ShapeRunner
from graphs.trace import eval_mode, symbolic_trace
from surgery.layers import layer_kind


def expected_channels(m: nn.Module) -> tuple[int, int] | None:
    """(input axis, channel count) a layer expects on its input, or None for layers without one.

    Example:
        >>> expected_channels(nn.Conv2d(3, 8, 3)), expected_channels(nn.LayerNorm(16))
        ((1, 3), (-1, 16))
    """
    kind = layer_kind(m)
    if kind is None or kind.input_axis is None:
        return None
    return kind.input_axis, kind.input_width(m)


class _Linter(ShapeRunner):
    """Checks channels before every layer call; convolutions are shape-only (graphs.shapes)."""

    def __init__(self, model: nn.Module, graph: fx.Graph) -> None:
        super().__init__(model, graph)
        self.problems: list[str] = []

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        m = self.fetch_attr(target)
        want = expected_channels(m)
        x = args[0] if args else None
        if want is not None and isinstance(x, torch.Tensor) and x.dim() > 0:
            dim, count = want
            if x.shape[dim] != count:
                self.problems.append(f"{target} ({type(m).__name__}) expects {count} channels "
                                     f"on dim {dim % x.dim()}, gets {x.shape[dim]}")
                args = (fit_channels(x, count, dim),) + tuple(args[1:])
        return super().call_module(target, args, kwargs)


def fit_channels(x: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """Trim or zero-pad ``x`` to ``count`` along ``dim`` so linting can go on past a mismatch."""
    if x.shape[dim] >= count:
        return x.narrow(dim, 0, count)
    shape = list(x.shape)
    shape[dim] = count - x.shape[dim]
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def lint(model: nn.Module, example_inputs: Any) -> list[str]:
    """Every layer whose expected input channels differ from what it receives; [] when sound.

    The pruned model is traced afresh: a graph traced before surgery may hold stale constants
    (e.g. ``F.layer_norm(x, self.normalized_shape)`` bakes the old width into the graph).
    """
    linter = _Linter(model, symbolic_trace(model, source_lines=False))
    with eval_mode(model), torch.no_grad():
        try:
            linter.run(*_placeholder_values(linter.graph, example_inputs))
        except RuntimeError as exc:  # a mismatch we did not catch above still surfaces
            if not linter.problems:
                linter.problems.append(f"running the model fails: {exc}")
    return linter.problems


def _placeholder_values(graph: fx.Graph, example_inputs: Any) -> list[Any]:
    """``example_inputs`` (``graphs.inputs.split_inputs``) in the order of the graph's inputs:
    positional ones first, then keyword ones by parameter name; missing ones use defaults."""
    args, kwargs = split_inputs(example_inputs)
    names = [n.target.lstrip("*") for n in graph.nodes if n.op == "placeholder"]
    values = list(args)
    for name in names[len(args):]:
        if name not in kwargs:
            break
        values.append(kwargs[name])
    return values
