"""Structured pruning surgery: rank channels, rebuild smaller layers, measure the result.

The names below are imported on first use (PEP 562), so ``import surgery`` and
``surgery --help`` do not load torch.

Example:
    >>> import torch
    >>> from surgery import prune
    >>> from surgery.io.models import LeNet
    >>> result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
    >>> result.params_after < result.params_before
    True
"""

from __future__ import annotations

import importlib
import sys
from types import MappingProxyType, ModuleType

# Public name -> the module that defines it (one line per export).
EXPORTS = MappingProxyType({
    "Budget": "surgery.plan.budget",
    "DynamicPruner": "surgery.recover.dynamic",
    "FlopCount": "surgery.measure.flops",
    "Latency": "surgery.measure.latency",
    "LatencyTarget": "surgery.plan.latency_target",
    "Plan": "surgery.plan.plan",
    "PruneResult": "surgery.prune",
    "SurgeryError": "surgery.errors",
    "apply_plan": "surgery.rebuild.apply",
    "compare_latency": "surgery.measure.paired",
    "count_flops": "surgery.measure.flops",
    "count_params": "surgery.measure.flops",
    "export_hf": "surgery.io.hf",
    "export_onnx": "surgery.io.export",
    "export_program": "surgery.io.export",
    "export_ultralytics": "surgery.io.yolo",
    "lint": "surgery.rebuild.lint",
    "load": "surgery.io.saving",
    "measure_latency": "surgery.measure.latency",
    "prune": "surgery.prune",
    "save": "surgery.io.saving",
})

__all__ = sorted(EXPORTS)  # noqa: PLE0605 - the table above is the one list of exports


def __getattr__(name: str) -> object:
    """``surgery.NAME``: the export, imported from its module on first use."""
    if name not in EXPORTS:
        raise AttributeError(f"module 'surgery' has no attribute {name!r}")
    return getattr(importlib.import_module(EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *EXPORTS})


class _Package(ModuleType):
    """The ``surgery`` module: importing a submodule named like an export (``surgery.prune``)
    does not hide the export (the function ``prune``) behind the submodule."""

    def __setattr__(self, name: str, value: object) -> None:
        if not (name in EXPORTS and isinstance(value, ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
