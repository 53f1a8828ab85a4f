"""Importance of each channel of a group: one score per channel, low scores are pruned first.

Criteria are plain functions ``(model, group) -> Tensor[C]`` in a table keyed by name.
L1 (default) is the classic filter-pruning score: the sum of |w| of each channel's filter,
summed over the group's producing layers (conv/linear out-channels).

Example:
    >>> import torch
    >>> from graphs import trace
    >>> from surgery.io.models import LeNet
    >>> model = LeNet()
    >>> group = trace(model, torch.zeros(1, 1, 28, 28)).prunable[0]
    >>> score(model, group, "l1").shape
    torch.Size([6])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import nn

from graphs.datamodel import OUT, Group, Member
from graphs.grouping import positions_array
from graphs.kinds import member_tensor
from surgery.errors import SurgeryError

Criterion = Callable[[nn.Module, Group], torch.Tensor]
BN_SCALE_FALLBACK = (
    "importance='bn_scale' ranks a group's channels by its norm layers' |gamma|, but a group "
    "has no norm weight (in a model without BatchNorm, none has): such groups are ranked by "
    "L1 instead; pass importance='l1' to choose that yourself")


SLICE = 1 << 22  # elements: a larger weight is summed a slice at a time, never copied whole


def _per_channel(w: torch.Tensor, member: Member, power: int) -> torch.Tensor:
    w = w.detach()
    dims = [d for d in range(w.dim()) if d != member.dim]
    per_position = _summed(w, dims, power) if dims else w.abs().pow(power)
    index = torch.from_numpy(positions_array(member))
    return per_position[index].sum(dim=1)


def _summed(w: torch.Tensor, dims: list[int], power: int) -> torch.Tensor:
    """sum(|w|^power) over ``dims``; over SLICE elements, in float64 slices along ``dims[0]``
    (an embedding table's |w| would be a second copy of it)."""
    if w.numel() <= SLICE:
        magnitude = w.abs() if power == 1 else w.abs().pow(power)
        return magnitude.sum(dim=dims)
    step = max(1, SLICE * w.shape[dims[0]] // w.numel())
    total = None
    for part in w.split(step, dim=dims[0]):
        sums = _summed(part, dims, power).double()
        total = sums if total is None else total.add_(sums)
    return total


def _filters(model: nn.Module, group: Group) -> list[tuple[torch.Tensor, Member]]:
    """The producing filters of a group: OUT members that are a layer's (or a ``weight``
    parameter's, as GPT-2's Conv1D) matrix, or the rows of a named matrix (an LSTM's
    ``weight_ih_l0``, experts' ``gate_up_proj``): not bare vectors or tokens, whose channels
    are their last dim."""
    found = []
    for m in group.members:
        w = member_tensor(model, m) if m.role == OUT and _holds_matrix(model, m.module) else None
        if w is not None and w.dim() >= 2 and (m.attr in ("", "weight") or m.dim < w.dim() - 1
                                               or w.dim() == 3 and w.shape[0] > 1):
            found.append((w, m))  # the last: experts' (E, in, out); tokens are (1, N, C)
    return found


def _holds_matrix(model: nn.Module, name: str) -> bool:
    """False only when no tensor the module holds (parameters, buffers, plain attributes; a
    parametrized one is computed: True) has two dims or more: it has no filters. Cheaper than
    finding its layer kind's tensor, for a norm that is a member of many groups."""
    module = model
    for part in name.split(".") if name else ():  # get_submodule's walk, without its checks
        module = module._modules[part]
    return "parametrizations" in module._modules or any(
        isinstance(t, torch.Tensor) and t.dim() >= 2
        for store in (module._parameters, module._buffers, module.__dict__) for t in store.values())


def magnitude(power: int) -> Criterion:
    def criterion(model: nn.Module, group: Group) -> torch.Tensor:
        scores = torch.zeros(group.channels, dtype=torch.float64)
        for w, member in _filters(model, group):
            scores += _per_channel(w, member, power).double()
        return scores.pow(1.0 / power)
    return criterion


def bn_scale(model: nn.Module, group: Group) -> torch.Tensor:
    """|gamma| of the group's norm layers (network slimming). A group without a norm weight
    is ranked by L1 instead, with a ``UserWarning`` (``BN_SCALE_FALLBACK``) saying so.

    Example:
        >>> import warnings
        >>> from graphs import trace
        >>> from surgery.io.models import LeNet
        >>> model = LeNet()
        >>> group = trace(model, torch.zeros(1, 1, 28, 28)).prunable[0]
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     torch.equal(bn_scale(model, group), magnitude(1)(model, group))
        True
        >>> str(caught[0].message)[:60]
        "importance='bn_scale' ranks a group's channels by its norm l"
    """
    scores = torch.zeros(group.channels, dtype=torch.float64)
    for m in group.members:
        module = model.get_submodule(m.module)
        w = getattr(module, "weight", None)
        if m.role == OUT and not m.attr and w is not None and w.dim() == 1:
            scores += w.detach().abs().double()[torch.tensor(m.indices)].sum(dim=1)
    if scores.any():
        return scores
    warnings.warn(BN_SCALE_FALLBACK, UserWarning, stacklevel=2)
    return magnitude(1)(model, group)


def random_scores(model: nn.Module, group: Group) -> torch.Tensor:
    generator = torch.Generator().manual_seed(group.id)
    return torch.rand(group.channels, generator=generator, dtype=torch.float64)


CRITERIA: Mapping[str, Criterion] = MappingProxyType(
    {"l1": magnitude(1), "l2": magnitude(2), "bn_scale": bn_scale, "random": random_scores})


# Criteria that need data prune() does not have: name -> how to use them.
NEEDS_DATA: Mapping[str, str] = MappingProxyType({
    "taylor": "importance='taylor' needs (inputs, targets) batches to take gradients on: pass "
              "importance=surgery.plan.taylor.taylor(model, batches), or use "
              "surgery.recover.schedule.iterative_prune(..., importance='taylor', data=batches)"})


@dataclass(frozen=True)
class Importance:
    """A criterion and the name the plan records for it."""

    name: str
    criterion: Criterion

    def scores(self, model: nn.Module, group: Group) -> torch.Tensor:
        """The criterion's scores for ``group``, checked by ``check_scores``.

        Example:
            >>> import torch
            >>> from graphs import trace
            >>> from surgery.io.models import LeNet
            >>> model = LeNet()
            >>> group = trace(model, torch.zeros(1, 1, 28, 28)).prunable[0]
            >>> resolve("l1").scores(model, group).shape
            torch.Size([6])
        """
        return check_scores(self.criterion(model, group), group, self.name)


def check_scores(scores: object, group: Group, name: str) -> torch.Tensor:
    """``scores`` as a float64 tensor of shape [C], finite and >= 0; else SurgeryError naming
    the group and the criterion.

    Example:
        >>> from graphs.datamodel import Group
        >>> check_scores([1.0, float("nan")], Group(3, 2, (), True), "mine")
        Traceback (most recent call last):
        ...
        surgery.errors.SurgeryError: importance 'mine' gave non-finite scores (nan or inf) for group 3 ()
    """
    where = f"group {group.id} ({', '.join(group.modules()[:4])})"
    try:
        values = torch.as_tensor(scores).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise SurgeryError(f"importance {name!r} gave {type(scores).__name__}, not a tensor of "
                           f"scores, for {where}: {exc}") from None
    if tuple(values.shape) != (group.channels,):
        raise SurgeryError(f"importance {name!r} gave scores of shape {list(values.shape)} for "
                           f"{where}, which has {group.channels} channels: expected "
                           f"[{group.channels}]")
    if not torch.isfinite(values).all():
        raise SurgeryError(f"importance {name!r} gave non-finite scores (nan or inf) for {where}")
    if (values < 0).any():
        raise SurgeryError(f"importance {name!r} gave negative scores for {where}: scores "
                           f"must be >= 0 (global ranking divides them by their mean)")
    return values


def resolve(importance: str | Criterion) -> Importance:
    """The criterion ``importance`` names (a key of CRITERIA) or is (a function); checked here.

    Example:
        >>> resolve("l2").name, resolve(random_scores).name
        ('l2', 'random_scores')
    """
    if isinstance(importance, str):
        if importance in NEEDS_DATA:
            raise SurgeryError(NEEDS_DATA[importance])
        if importance not in CRITERIA:
            raise SurgeryError(f"unknown importance {importance!r}: choose one of "
                               f"{', '.join(sorted(CRITERIA))} or pass a function")
        return Importance(importance, CRITERIA[importance])
    if not callable(importance):
        raise SurgeryError(f"importance must be a name ({', '.join(sorted(CRITERIA))}) or a "
                           f"function (model, group) -> Tensor[C], got {type(importance).__name__}")
    return Importance(getattr(importance, "__name__", "custom"), importance)


def score(model: nn.Module, group: Group, importance: str | Criterion = "l1") -> torch.Tensor:
    """Score every channel of ``group``; ``importance`` is a name in CRITERIA or a function."""
    return resolve(importance).scores(model, group)
