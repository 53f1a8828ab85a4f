"""Structured pruning surgery: rank channels, rebuild smaller layers, measure the result.

Example:
    >>> import torch
    >>> from surgery import prune
    >>> from surgery.zoo import LeNet
    >>> result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
    >>> result.params_after < result.params_before
    True
"""

from surgery.dynamic import DynamicPruner
from surgery.errors import SurgeryError
from surgery.export import export_onnx, export_program
from surgery.flops import FlopCount, count_flops, count_params
from surgery.latency import Latency, measure_latency
from surgery.lint import lint
from surgery.plan import Plan
from surgery.prune import PruneResult, apply_plan, prune
from surgery.saving import load, save

__all__ = [
           "DynamicPruner",
           "FlopCount",
           "Latency",
           "Plan",
           "PruneResult",
           "SurgeryError",
           "apply_plan",
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
