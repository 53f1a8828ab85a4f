"""Checks of a saved plan against the base model it is applied to, before anything is built:
its size (``check_plan_size``, on the raw JSON) and every module, dim, index and size attribute
it names (``check_plan``). ``surgery.io.saving.load`` runs both.

Example:
    >>> import torch
    >>> from surgery import prune
    >>> from surgery.io.models import LeNet
    >>> plan = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5).plan
    >>> check_plan_size(plan.to_json(), LeNet())
    >>> check_plan(plan, LeNet())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphs.datamodel import SIZE
from graphs.kinds import indexed_tensor
from surgery.errors import SurgeryError
from surgery.plan.plan import MemberPlan, Plan

PLAN_FACTOR = 4  # plan entries per position of the base model's tensors (see check_plan_size)
JSON_VALUES_PER_ENTRY = 8  # a member's fields and its list commas: at most ~6 per entry
# The int attributes of torch's own layers that pruning changes (SIZE members); the others a
# torch layer declares (stride, padding, kernel_size, ...) a plan may never change.
CHANNEL_COUNTS = frozenset({"in_channels", "out_channels", "in_features", "out_features",
                            "num_features", "num_channels", "num_groups", "input_size",
                            "hidden_size", "proj_size", "kdim", "vdim", "unflattened_size"})


def check_plan_size(data: dict, model: nn.Module, path: Path | str = "plan.json") -> None:
    """Raise SurgeryError if the plan (raw JSON) lists more entries (groups, members, indices)
    than ``PLAN_FACTOR`` per position of ``model``'s tensors (the sizes of all their dims,
    summed): counted before the plan is built, so a padded plan.json costs no more than that.

    Example:
        >>> from surgery.io.models import LeNet
        >>> check_plan_size({"groups": [{"members": [{"kept": [0, 1]}]}]}, LeNet())
    """
    groups = data.get("groups") if isinstance(data.get("groups"), list) else []
    entries = len(groups)
    for g in (g for g in groups if isinstance(g, dict)):
        members = g.get("members") if isinstance(g.get("members"), list) else []
        entries += _length(g.get("removed_channels")) + len(members) + sum(
            _length(m.get("kept")) + _length(m.get("removed")) for m in members
            if isinstance(m, dict))
    if entries > plan_capacity(model):
        raise SurgeryError(f"{path} lists {entries:,} groups, members and indices; a plan for "
                           f"this base model lists at most {plan_capacity(model):,} "
                           f"(edited plan, or a base model other than the one pruned?)")


def plan_capacity(model: nn.Module) -> int:
    """At most how many entries (groups, members, indices) a plan for ``model`` lists:
    ``PLAN_FACTOR`` per position of its tensors (the sizes of all their dims, summed) + 1024.
    ``JSON_VALUES_PER_ENTRY`` times that bounds the values of its plan.json, before parsing.

    Example:
        >>> plan_capacity(nn.Linear(3, 2))  # weight 2 + 3, bias 2
        4124
    """
    tensors = (*model.parameters(), *model.buffers())
    return PLAN_FACTOR * (sum(sum(t.shape) for t in tensors) + 1024)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


def check_plan(plan: Plan, model: nn.Module) -> None:
    """Raise SurgeryError unless every module, dim and index in ``plan`` fits ``model``.

    Indices must lie in range, appear once per member, and no index may be both kept and
    removed on the same module dim.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> check_plan(prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5).plan, LeNet())
    """
    kept: dict[tuple[str, int], set[int]] = {}
    for g in plan.groups:
        for m in g.members:
            size = _member_size(model, m)
            for what, indices in (("removes", m.removed), ("keeps", m.kept)):
                bad = [i for i in indices if not 0 <= i < size]
                if bad:
                    raise SurgeryError(f"the plan {what} indices {bad[:5]} of dim {m.dim} of "
                                       f"{m.module!r}, which has only {size}")
                if len(set(indices)) != len(indices):
                    raise SurgeryError(f"the plan {what} an index of dim {m.dim} of "
                                       f"{m.module!r} twice (edited plan?)")
            if not m.attr:
                kept.setdefault((m.module, m.dim), set()).update(m.kept)
    for (name, dim), removed in plan.removed().items():
        size = _dim_size(model, name, dim)
        both = sorted(kept.get((name, dim), set()) & set(removed))
        if both:
            raise SurgeryError(f"the plan both keeps and removes indices {both[:5]} of dim "
                               f"{dim} of {name!r} (edited plan?)")
        if len(removed) >= size:
            raise SurgeryError(f"the plan removes all {size} indices of dim {dim} of {name!r}")


def _member_size(model: nn.Module, m: MemberPlan) -> int:
    """How many positions member ``m`` indexes in ``model``: its dim's size, or the value of the
    int attribute a SIZE member names (a plan may only name what the model already has)."""
    if not m.attr:
        return _dim_size(model, m.module, m.dim)
    module = _module(model, m.module)
    if m.role == SIZE:
        _check_size_attr(module, m)
    value = getattr(module, m.attr, None) if m.role == SIZE else module._parameters.get(m.attr)
    if m.role == SIZE and type(value) is int:
        return value
    if m.role == SIZE and isinstance(value, (tuple, list)) and 0 <= m.dim < len(value):
        return int(value[m.dim])
    if m.role != SIZE and isinstance(value, torch.Tensor) and 0 <= m.dim < value.dim():
        return value.shape[m.dim]
    what = "int attribute" if m.role == SIZE else "parameter dim"
    raise SurgeryError(f"the plan names {m.attr!r} of {m.module!r} ({type(module).__name__}), "
                       f"which has no such {what}")


def _check_size_attr(module: nn.Module, m: MemberPlan) -> None:
    """A SIZE member may change only a size pruning changes: on torch's own layers one of
    ``CHANNEL_COUNTS``, and never another setting a torch layer class declares (its
    ``__constants__``: stride, padding, kernel_size, ...), subclasses included."""
    torch_classes = [c for c in type(module).__mro__ if c.__module__.startswith("torch.")
                     and c is not nn.Module]
    settings = {name for c in torch_classes for name in getattr(c, "__constants__", ())}
    own = type(module).__module__.startswith("torch.")
    if m.attr not in CHANNEL_COUNTS and (own or m.attr in settings):
        raise SurgeryError(f"the plan changes {m.attr!r} of {m.module!r} "
                           f"({type(module).__name__}), which pruning never changes "
                           f"(edited plan?)")


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise SurgeryError(f"the plan names module {name!r}, which is not in the base "
                           f"model: is the base model the one that was pruned?") from None


def _dim_size(model: nn.Module, name: str, dim: int) -> int:
    module = _module(model, name)
    tensor = indexed_tensor(module)
    if tensor is None or not 0 <= dim < tensor.dim():
        raise SurgeryError(f"the plan prunes dim {dim} of {name!r} "
                           f"({type(module).__name__}), which has no such weight dim")
    return tensor.shape[dim]


__all__ = ["CHANNEL_COUNTS", "JSON_VALUES_PER_ENTRY", "PLAN_FACTOR", "check_plan",
           "check_plan_size", "plan_capacity"]
