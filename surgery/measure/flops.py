"""Count a model's multiply-adds (fvcore) and parameters.

fvcore's convention is kept: one multiply-add counts 1, so ``FlopCount.total`` is in MACs;
``FlopCount.flops`` doubles it. fvcore's formulas are extended by ``surgery.measure.handles``
(fused multi-head attention, scaled_dot_product_attention, baddbmm, rms_norm, 1-d/3-d and
bicubic upsampling), so a layer counts the same before and after surgery. Ops with no formula
(element-wise ops, pooling, activations) are listed in ``FlopCount.uncounted``, never hidden.

Example:
    >>> from surgery.io.models import LeNet
    >>> count = count_flops(LeNet(), torch.zeros(1, 1, 28, 28))
    >>> count.total, count.flops
    (281640, 563280)
    >>> print(count)
    281.64 KMACs (563.28 KFLOPs); uncounted ops: aten::max_pool2d (2)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from graphs.inputs import Positional, input_leaves
from graphs.modes import eval_mode
from surgery.errors import SurgeryError
from surgery.measure.handles import EXTRA_HANDLES

with warnings.catch_warnings():  # fvcore's import scripts a helper with torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

_PREFIXES = ("", "K", "M", "G", "T", "P")


@dataclass(frozen=True)
class FlopCount:
    """Multiply-adds of one forward pass, as fvcore counts them.

    Attributes:
        total: multiply-adds (MACs) of the whole model; one multiply-add counts 1.
        by_module: qualified module name -> MACs ("" is the whole model).
        uncounted: op name -> how many times it ran without being counted.
        by_operator: op name (fvcore's short name, e.g. "linear") -> MACs.

    Example:
        >>> c = FlopCount(total=1_820_000_000, by_module={}, uncounted={"aten::add": 8})
        >>> print(c)
        1.82 GMACs (3.64 GFLOPs); uncounted ops: aten::add (8)
    """

    total: int
    by_module: Mapping[str, int]
    uncounted: Mapping[str, int]
    by_operator: Mapping[str, int] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        """Floating-point operations: 2 per multiply-add."""
        return 2 * self.total

    def __str__(self) -> str:
        text = f"{human_count(self.total)}MACs ({human_count(self.flops)}FLOPs)"
        if self.uncounted:
            ops = ", ".join(f"{name} ({n})" for name, n in sorted(self.uncounted.items()))
            text += f"; uncounted ops: {ops}"
        return text


def human_count(n: float) -> str:
    """Format a count with a decimal SI prefix and a trailing space for the unit.

    Example:
        >>> human_count(1_820_000_000), human_count(281_640), human_count(840)
        ('1.82 G', '281.64 K', '840 ')
    """
    value, step = float(n), 0
    while abs(value) >= 1000 and step < len(_PREFIXES) - 1:
        value, step = value / 1000, step + 1
    if step == 0:
        return f"{n:g} "
    return f"{value:.2f} {_PREFIXES[step]}"


def count_flops(model: nn.Module, example_inputs: Any) -> FlopCount:
    """Count the multiply-adds of ``model`` called on ``example_inputs`` with fvcore, in eval
    mode.

    The inputs are read as ``prune`` reads them (a tensor, a tuple/list of positional inputs,
    a dict of keyword inputs such as ``{"input_ids": ids, "use_cache": False}``, any pytree of
    tensors below). fvcore traces ``graphs.inputs.Positional``: the model called on the
    example's tensors, passed positionally, with its outputs (a ``ModelOutput``, dicts,
    nested containers) flattened to a tuple of tensors and non-tensor outputs (caches, None)
    dropped; the ops that made them are still counted. Module names are the model's own. The
    model is traced under ``torch.no_grad()``; its training flags are restored after.

    Example:
        >>> net = nn.Sequential(nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 10))
        >>> c = count_flops(net, torch.zeros(1, 256))
        >>> c.total, c.by_module["0"], c.by_module["2"]
        (31920, 30720, 1200)
        >>> count_flops(net, {"input": torch.zeros(1, 256)}).total
        31920
    """
    leaves = tuple(t for _, t in input_leaves(example_inputs))
    if not leaves:
        raise SurgeryError("count_flops needs a tensor among the example inputs")
    if any(t.is_meta for t in (*model.parameters(), *leaves)):
        raise SurgeryError("count_flops runs the model: its weights or inputs are on the meta "
                           "device (not loaded)")
    net = Positional(model, example_inputs)
    with eval_mode(net), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        analysis = FlopCountAnalysis(net, leaves).set_op_handle(**EXTRA_HANDLES)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        try:
            total = int(analysis.total())
        except RuntimeError as exc:  # the JIT tracer refuses what it cannot follow
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise SurgeryError(f"count_flops: {type(model).__name__} failed under fvcore's "
                               f"JIT tracer: {first}") from exc
        by_module = _own_names({name: int(n) for name, n in analysis.by_module().items()})
        uncounted = {op: int(n) for op, n in analysis.unsupported_ops().items()}
        by_operator = {op: int(n) for op, n in analysis.by_operator().items()}
    return FlopCount(total, by_module, uncounted, by_operator)


def _own_names(by_module: dict[str, int]) -> dict[str, int]:
    """fvcore's per-module counts of ``Positional(model)`` under the model's own names."""
    return {"" if name == "model" else name.removeprefix("model."): n
            for name, n in by_module.items() if name}


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (trainable or not; shared parameters counted once).

    Example:
        >>> from surgery.io.models import LeNet
        >>> count_params(LeNet())
        44426
    """
    return sum(p.numel() for p in model.parameters())
