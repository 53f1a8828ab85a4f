"""Eval mode for a block without flipping anything for good: ``eval_mode``.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    >>> with eval_mode(model):
    ...     model[1].training
    False
    >>> model[1].training
    True
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


class _EvalHolds:
    """Per module (by id): the module, how many ``eval_mode`` blocks hold it, and its training
    flag before the first one began. Shared by all threads, behind one lock: a model may be in
    several blocks at once (two threads tracing it), and only the last to end restores it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[int, list] = {}  # id -> [module, count, flag before]

    def enter(self, model: nn.Module, modules: list[nn.Module]) -> None:
        with self.lock:
            for m in modules:
                entry = self.held.setdefault(id(m), [m, 0, m.training])
                entry[1] += 1
            try:
                model.eval()
            except BaseException:  # a train() override that raises: nothing stays held
                self._release(modules)
                raise

    def leave(self, modules: list[nn.Module]) -> None:
        with self.lock:
            self._release(modules)

    def _release(self, modules: list[nn.Module]) -> None:
        for m in modules:
            entry = self.held[id(m)]
            entry[1] -= 1
            if entry[1] == 0:
                m.training = entry[2]
                del self.held[id(m)]


_EVAL_HOLDS = _EvalHolds()  # process-wide: overlapping blocks on one model may come from any thread


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every module's training flag restored after.

    Blocks may overlap (one model traced from two threads, or a module and its parent): each
    module's flag comes back, when the last block holding it ends, to what it was before the
    first began. During the block the flags are the model's own, so every thread sees eval
    mode: a training forward run meanwhile in another thread runs BatchNorm on its running
    statistics (it does not update them). To keep training while tracing, trace a copy.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
        >>> with eval_mode(model):
        ...     with eval_mode(model[1]):
        ...         model.training, model[1].training
        (False, False)
        >>> model.training, model[1].training
        (True, True)
    """
    modules = list(model.modules())
    _EVAL_HOLDS.enter(model, modules)
    try:
        yield model
    finally:
        _EVAL_HOLDS.leave(modules)
