"""Eval mode without flipping anything for good: ``eval_mode`` (for a block) and ``eval_shadow``
(a copy of the module tree that shares every tensor, for the capture).

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

import contextlib
import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
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


def eval_shadow(model: nn.Module) -> nn.Module | None:
    """A copy of ``model``'s module tree in eval mode that shares every parameter, buffer and
    hook with it, or None when one of its modules cannot be copied so (a scripted module).

    Running the shadow instead of the model flips nothing of the user's: a training forward in
    another thread meanwhile still trains (its BatchNorm uses and updates batch statistics).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
        >>> shadow = eval_shadow(model)
        >>> shadow[1].training, model[1].training, shadow[0].weight is model[0].weight
        (False, True, True)
    """
    copies: dict[int, nn.Module] = {}
    try:
        return _shadow(model, copies)
    except (TypeError, RuntimeError, AttributeError):  # e.g. torch.jit.ScriptModule
        return None


def _shadow(module: nn.Module, copies: dict[int, nn.Module]) -> nn.Module:
    if id(module) in copies:  # a module registered twice stays one module
        return copies[id(module)]
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError("a scripted module")
    new = copy.copy(module)
    copies[id(module)] = new
    for name, value in module.__dict__.items():
        if isinstance(value, dict) and ("hooks" in name or name in ("_parameters", "_buffers")):
            new.__dict__[name] = type(value)(value)  # the same tensors and hooks, its own registry
    new.__dict__["_modules"] = {k: None if c is None else _shadow(c, copies)
                                for k, c in module._modules.items()}
    new.training = False
    return new


def eval_runner(model: nn.Module) -> tuple[nn.Module, contextlib.AbstractContextManager]:
    """What to run, and in which block, for an eval-mode forward that flips none of the user's
    flags: the model itself when all of it is in eval mode already, else its eval shadow
    (``eval_shadow``), else (a scripted module) the model under ``eval_mode``.

    Example:
        >>> eval_runner(nn.Linear(2, 2).eval())[0].training, eval_runner(nn.Linear(2, 2))[0].training
        (False, False)
    """
    if not any(m.training for m in model.modules()):
        return model, contextlib.nullcontext()
    shadow = eval_shadow(model)
    return (model, eval_mode(model)) if shadow is None else (shadow, contextlib.nullcontext())
