"""Dependency graphs of coupled channels, captured from the model's real forward.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> from surgery.io.models import LeNet
    >>> print(trace(LeNet(), torch.zeros(1, 1, 28, 28)).prunable[0].members[0])
    Member(module='conv1', role='out', dim=0, indices=((0,), (1,), (2,), (3,), (4,), (5,)), attr='')
"""

from graphs.datamodel import IN, OUT, SIZE, DependencyGraph, Group, Member, Unsupported
from graphs.errors import TraceError
from graphs.rules.defaults import default_rules
from graphs.rules.table import RuleTable
from graphs.trace import trace

__all__ = [
           "IN",
           "OUT",
           "SIZE",
           "DependencyGraph",
           "Group",
           "Member",
           "RuleTable",
           "TraceError",
           "Unsupported",
           "default_rules",
           "trace",
]
