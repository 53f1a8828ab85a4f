"""Carry an optimizer across a structural prune: same param groups, sliced per-parameter state.

``apply_plan`` replaces every layer a plan touches with a new, smaller one (new ``Parameter``
objects), so an optimizer built on the dense model would keep stale references and momentum of
the wrong shape. ``prune_with_optimizer`` prunes in place and rewrites the optimizer in place:
each param group keeps its options (lr, weight decay, ...) and gets the new parameters in place
of the old ones; every tensor-valued state entry of a parameter's shape (SGD ``momentum_buffer``,
Adam/AdamW ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) is sliced with the kept indices;
scalars (``step``) are kept. An LR scheduler bound to the optimizer stays bound.

Which entries of a parameter survive is read, not re-derived: a throw-away float64 copy of the
model whose parameters hold their own flat indices is rebuilt through the same ``apply_plan``,
so whatever a surgeon does (conv, linear, norms, attention heads), the new parameter holds the
flat indices of the old entries it kept (exact up to 2**53 entries). Parameters that group
members name (``Member.attr``: a layer scale, a class token, GPT-2 Conv1D's weight) are cut by
``apply_plan`` too and read the same way; a SIZE member (an int attribute) has no state. Groups
over a norm (``Group.inexact``) are cut exactly as ``prune()`` cuts them.

Example:
    >>> import torch
    >>> from surgery.io.models import LeNet
    >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> model(torch.randn(4, 1, 28, 28)).sum().backward(); opt.step()
    >>> shrunk = prune_with_optimizer(model, x, opt, ratio=0.5)
    >>> opt.state[model.conv1.weight]["momentum_buffer"].shape
    torch.Size([3, 1, 5, 5])
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from surgery.plan.plan import Plan
from surgery.prune import PruneResult, prune
from surgery.rebuild.apply import apply_plan

KeptIndices = dict[str, Tensor]  # parameter name -> flat indices (into the old tensor) kept


@dataclass
class Shrink:
    """A prune done in place: the ``PruneResult`` and, per rebuilt parameter, its kept indices."""

    result: PruneResult
    kept: KeptIndices


def kept_indices(model: nn.Module, plan: Plan) -> KeptIndices:
    """Parameter name -> flat indices of the old tensor that ``apply_plan(model, plan)`` keeps.

    Only parameters of the modules the plan touches are listed. ``model`` is not changed.

    Example:
        >>> import torch
        >>> from surgery.io.models import LeNet
        >>> model = LeNet()
        >>> plan = prune(model, torch.zeros(1, 1, 28, 28), ratio=0.5).plan
        >>> kept = kept_indices(model, plan)
        >>> kept["conv1.bias"].tolist() == plan.groups[0].members[0].kept
        True
    """
    return read_kept(index_model(model), plan)


def index_model(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` whose every parameter holds its own flat indices."""
    shadow = copy.deepcopy(model).to(torch.float64)
    with torch.no_grad():
        for p in shadow.parameters():
            p.copy_(torch.arange(p.numel(), dtype=torch.float64).view(p.shape))
    return shadow


def read_kept(shadow: nn.Module, plan: Plan) -> KeptIndices:
    """Rebuild ``shadow`` (from ``index_model``) with ``plan``; read the flat indices it kept.

    Listed: every parameter of a rebuilt layer, and every parameter a member names by
    ``attr`` (a layer scale, GPT-2 Conv1D's weight). SIZE members hold no tensor.
    """
    layers = {name for name, _ in plan.removed()}
    named = {_qualified(module, attr) for module, attr, _ in plan.removed_params()}
    apply_plan(shadow, plan)
    return {name: p.detach().flatten().to(torch.long)
            for name, p in shadow.named_parameters()
            if name in named or any(_inside(name, layer) for layer in layers)}


def _qualified(module: str, attr: str) -> str:
    return f"{module}.{attr}" if module else attr


def _inside(name: str, module: str) -> bool:
    """Whether parameter ``name`` belongs to ``module`` (or its children; "" is the root)."""
    return not module or name.startswith(f"{module}.")


def slice_tensor(old: Tensor, kept: Tensor, shape: torch.Size) -> Tensor:
    """The entries of ``old`` at flat indices ``kept``, shaped ``shape`` (a new tensor).

    Example:
        >>> slice_tensor(torch.arange(6.).view(2, 3), torch.tensor([3, 5]), torch.Size([1, 2]))
        tensor([[3., 5.]])
    """
    return old.detach().flatten().index_select(0, kept.to(old.device)).view(shape).clone()


def slice_named(tensors: Mapping[str, Tensor], kept: KeptIndices,
                shapes: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    """Slice every tensor named in ``kept`` (keyed by parameter name) to its new shape."""
    return {name: slice_tensor(t, kept[name], shapes[name]) if name in kept else t
            for name, t in tensors.items()}


def remap_optimizer(optimizer: torch.optim.Optimizer, old: Mapping[str, nn.Parameter],
                    new: Mapping[str, nn.Parameter], kept: KeptIndices) -> None:
    """Point ``optimizer`` (in place) at the ``new`` parameters and slice their state.

    ``old`` and ``new`` map parameter names to the parameters before and after the prune.
    A parameter that is the same object in both is left alone.
    """
    swap = {id(p): new[name] for name, p in old.items() if new.get(name) is not p}
    for group in optimizer.param_groups:
        group["params"] = [swap.get(id(p), p) for p in group["params"]]
    for name, p in old.items():
        if id(p) not in swap or p not in optimizer.state:
            continue
        fresh = new[name]
        state = optimizer.state.pop(p)
        optimizer.state[fresh] = {
            key: slice_tensor(v, kept[name], fresh.shape)
            if isinstance(v, Tensor) and v.shape == p.shape and p.dim() > 0 else v
            for key, v in state.items()}


def apply_with_optimizer(model: nn.Module, plan: Plan,
                         optimizer: torch.optim.Optimizer | None = None) -> KeptIndices:
    """``apply_plan(model, plan)`` in place, carrying ``optimizer``; returns the kept indices.

    For a plan made on a copy of ``model`` (``prune(model, x)`` without ``inplace``), e.g. to
    look at the pruned copy before committing to it.

    Example:
        >>> import torch
        >>> from surgery.io.models import LeNet
        >>> model = LeNet()
        >>> result = prune(model, torch.zeros(1, 1, 28, 28), ratio=0.5)  # model untouched
        >>> kept = apply_with_optimizer(model, result.plan)
        >>> planned = result.plan.groups[0].members[0].kept
        >>> model.conv1.out_channels, kept["conv1.bias"].tolist() == planned
        (3, True)
    """
    old = dict(model.named_parameters())
    kept = read_kept(index_model(model), plan)
    apply_plan(model, plan)
    if optimizer is not None:
        remap_optimizer(optimizer, old, dict(model.named_parameters()), kept)
    return kept


def prune_with_optimizer(model: nn.Module, example_inputs: Any,
                         optimizer: torch.optim.Optimizer | None = None,
                         **prune_options: Any) -> Shrink:
    """``prune(model, example_inputs, inplace=True, **prune_options)``, carrying ``optimizer``.

    Returns a ``Shrink`` (the ``PruneResult`` and the kept flat indices per rebuilt parameter,
    for slicing other per-parameter tensors with ``slice_named``).
    """
    old = dict(model.named_parameters())
    shadow = index_model(model)  # taken before: prune() rebuilds ``model`` as it plans
    result = prune(model, example_inputs, inplace=True, **prune_options)
    kept = read_kept(shadow, result.plan)
    if optimizer is not None:
        remap_optimizer(optimizer, old, dict(model.named_parameters()), kept)
    return Shrink(result, kept)
