"""Peak torch CPU memory of a call, counted exactly from the allocator's own events.

``torch.profiler`` with ``profile_memory=True`` records every CPU allocation and free of torch
tensors (``[memory]`` events with their byte counts). The model is built inside the profiled
region, so that freeing its old tensors during surgery is seen too (a free of memory allocated
before profiling started carries no size). The peak is the highest running sum of the events
inside the call, above the sum when it began: deterministic, independent of the machine's
load and of what malloc returns to the system (unlike the resident set size).

Example:
    >>> import torch
    >>> from torch import nn
    >>> peak = torch_peak(lambda: nn.Linear(256, 256), lambda m: m.weight.clone())
    >>> peak.model_bytes, peak.peak_bytes, peak.end_bytes
    (263168, 262144, 262144)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile, record_function

MARK = "scale_memory.call"


@dataclass(frozen=True)
class Peak:
    """Bytes of the model's parameters and buffers, the most torch held above what it held
    when the call began, and what it held above that when the call ended (below 0: freed)."""

    model_bytes: int
    peak_bytes: int
    end_bytes: int

    @property
    def ratio(self) -> float:
        """Peak above the model, in model sizes."""
        return self.peak_bytes / self.model_bytes


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct parameters and buffers of ``model``."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def torch_peak(build: Callable[[], torch.nn.Module],
               call: Callable[[torch.nn.Module], object]) -> Peak:
    """The peak torch CPU allocation of ``call(model)`` above what was held when it began,
    ``model = build()`` (built under the profiler; see the module docstring)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model = build()
        size = model_bytes(model)
        with record_function(MARK):
            result = call(model)
        del result
    events = list(prof.profiler.kineto_results.events())
    span = next(e for e in events if e.name() == MARK)
    memory = sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())
    held, start, peak = 0, None, 0
    for e in memory:
        if e.start_ns() > span.end_ns():
            break
        if start is None and e.start_ns() >= span.start_ns():
            start = held
        held += e.nbytes()
        if start is not None:
            peak = max(peak, held - start)
    return Peak(size, peak, held - (start or 0))
