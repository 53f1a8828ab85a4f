"""Structured pruning surgery: rank channels, rebuild smaller layers, measure the result.

Example:
    >>> import torch
    >>> from surgery import prune
    >>> from surgery.io.models import LeNet
    >>> result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
    >>> result.params_after < result.params_before
    True
"""

from surgery.errors import SurgeryError
from surgery.io.export import export_onnx, export_program
from surgery.io.saving import load, save
from surgery.measure.flops import FlopCount, count_flops, count_params
from surgery.measure.latency import Latency, measure_latency
from surgery.measure.paired import compare_latency
from surgery.plan.budget import Budget
from surgery.plan.latency_target import LatencyTarget
from surgery.plan.plan import Plan
from surgery.prune import PruneResult, prune
from surgery.rebuild.apply import apply_plan
from surgery.rebuild.lint import lint
from surgery.recover.dynamic import DynamicPruner

__all__ = [
           "Budget",
           "DynamicPruner",
           "FlopCount",
           "Latency",
           "LatencyTarget",
           "Plan",
           "PruneResult",
           "SurgeryError",
           "apply_plan",
           "compare_latency",
           "count_flops",
           "count_params",
           "export_onnx",
           "export_program",
           "lint",
           "load",
           "measure_latency",
           "prune",
           "save",
]
