"""Apply a plan: rebuild every layer it touches and swap the new layers in (the one place)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from graphs.kinds import indexed_tensor
from graphs.sharing import Shared, module_aliases, shared_tensors
from surgery.errors import SurgeryError
from surgery.plan.plan import Plan
from surgery.rebuild.surgeons import default_surgeons, rebuild


def apply_plan(model: nn.Module, plan: Plan) -> nn.Module:
    """Rebuild every layer the plan touches, in place on ``model``; returns ``model``.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> plan = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5).plan
        >>> apply_plan(LeNet(), plan).conv2
        Conv2d(3, 8, kernel_size=(5, 5), stride=(1, 1))
    """
    shared, aliases = shared_tensors(model), module_aliases(model)
    keep_by_module: dict[str, dict[int, torch.Tensor]] = {}
    for (name, dim), removed in plan.removed().items():
        size = indexed_tensor(model.get_submodule(name)).shape[dim]
        keep = np.delete(np.arange(size, dtype=np.int64), np.asarray(removed, dtype=np.int64))
        keep_by_module.setdefault(name, {})[dim] = torch.from_numpy(keep)
    surgeons = default_surgeons()
    for name, keep in keep_by_module.items():
        new = rebuild(model.get_submodule(name), keep, surgeons)
        for alias in (name, *aliases.get(name, ())):
            replace(model, alias, new)
    for (name, attr, dim), removed in plan.removed_params().items():
        cut_parameter(model.get_submodule(name), attr, dim, removed)
    for (name, attr, element), cut in plan.size_cuts().items():
        cut_size(model.get_submodule(name), attr, element, cut)
    for tensor in shared:
        retie(model, tensor)
    return model


def retie(model: nn.Module, shared: Shared) -> None:
    """Make every holder of a tensor that was shared (``graphs.sharing.shared_tensors``, taken
    before surgery) hold its first holder's tensor again: the same object, or a Parameter on
    the same memory where they were two. Each holder was cut on its own; holders cut
    differently raise SurgeryError.

    Example:
        >>> model = nn.ModuleDict({"embed": nn.Embedding(5, 4), "head": nn.Linear(4, 5)})
        >>> model.head.weight = model.embed.weight
        >>> (tied,) = shared_tensors(model)
        >>> model.head = nn.Linear(4, 5)  # rebuilt on its own
        >>> _ = model.head.weight.data.copy_(model.embed.weight.data)
        >>> retie(model, tied)
        >>> model.head.weight is model.embed.weight
        True
    """
    (first, attr), *others = shared.holders
    tensor = _held(model.get_submodule(first), attr)
    for name, other_attr in others:
        module = model.get_submodule(name)
        old = _held(module, other_attr)
        if old is tensor:
            continue
        if old is None or tensor is None:
            raise SurgeryError(f"{first}.{attr} and {name}.{other_attr} shared one tensor, "
                               f"but one of them is gone after surgery")
        if old.shape != tensor.shape or not torch.equal(old, tensor):
            raise SurgeryError(f"{first}.{attr} and {name}.{other_attr} shared one tensor but "
                               f"were cut differently ({list(tensor.shape)} and "
                               f"{list(old.shape)}): the plan must cut tied weights alike")
        if other_attr in module._buffers:
            module._buffers[other_attr] = tensor if shared.same else tensor.detach()
        else:  # setattr: nn.RNNBase keeps its weights in a list of its own too
            setattr(module, other_attr, tensor if shared.same else
                    nn.Parameter(tensor.data, old.requires_grad))


def _held(module: nn.Module, attr: str) -> torch.Tensor | None:
    held = module._parameters.get(attr)
    return module._buffers.get(attr) if held is None else held


def cut_parameter(module: nn.Module, attr: str, dim: int, removed: list[int]) -> None:
    """Replace parameter ``attr`` of ``module`` by a new one without ``removed`` along ``dim``
    (a layer scale, a class token); requires_grad is kept. A float buffer of that name (BEiT's
    zero ``k_bias`` between the q and v biases) is sliced the same way.

    Example:
        >>> m = nn.Linear(2, 3)
        >>> cut_parameter(m, "bias", 0, [1])
        >>> tuple(m.bias.shape)
        (2,)
    """
    old = module._parameters.get(attr)
    buffer = module._buffers.get(attr) if old is None else None
    tensor = old if isinstance(old, nn.Parameter) else buffer
    if not isinstance(tensor, torch.Tensor) or not 0 <= dim < tensor.dim():
        raise SurgeryError(f"{type(module).__name__} has no parameter {attr!r} with dim {dim}")
    keep = np.delete(np.arange(tensor.shape[dim], dtype=np.int64), np.asarray(removed, np.int64))
    index = torch.from_numpy(keep).to(tensor.device)
    if buffer is not None:
        module._buffers[attr] = buffer.index_select(dim, index)
        return
    # setattr, not _parameters[attr]: nn.RNNBase keeps its weights in a list of its own too
    setattr(module, attr, nn.Parameter(old.detach().index_select(dim, index), old.requires_grad))


def cut_size(module: nn.Module, attr: str, element: int, cut: int) -> None:
    """Lower the int attribute ``attr`` of ``module`` (``num_heads``), or element ``element``
    of a tuple of ints (``split_indexes``), by ``cut``.

    Example:
        >>> m = nn.Identity()
        >>> m.sizes = (4, 2)
        >>> cut_size(m, "sizes", 1, 1)
        >>> m.sizes
        (4, 1)
    """
    value = getattr(module, attr, None)
    if type(value) is int and element == 0:
        setattr(module, attr, value - cut)
    elif isinstance(value, (tuple, list)) and 0 <= element < len(value) \
            and all(type(v) is int for v in value):
        sizes = list(value)
        sizes[element] -= cut
        setattr(module, attr, type(value)(sizes))
    else:
        raise SurgeryError(f"{type(module).__name__} has no int attribute {attr!r} (or tuple "
                           f"of ints with element {element}) to resize")


def replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Swap the submodule at qualified ``name`` for ``new`` (the one place modules change)."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
