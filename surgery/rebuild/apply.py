"""Apply a plan: rebuild every layer it touches and swap the new layers in (the one place)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from graphs.kinds import indexed_tensor
from graphs.sharing import Shared, module_aliases, shared_tensors
from surgery.errors import SurgeryError
from surgery.plan.plan import Plan
from surgery.rebuild.surgeons import default_surgeons, rebuild
from surgery.rebuild.widths import follow_links, width_links


def apply_plan(model: nn.Module, plan: Plan) -> nn.Module:
    """Rebuild every layer the plan touches, in place on ``model``; returns ``model``. Each old
    layer goes as soon as its new one is in: memory grows by one layer at a time.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> plan = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5).plan
        >>> apply_plan(LeNet(), plan).conv2
        Conv2d(3, 8, kernel_size=(5, 5), stride=(1, 1))
    """
    shared = shared_tensors(model)
    links = width_links(model)  # timm's num_features and kin: read by no forward
    swap_in(model, layer_keeps(model, plan), module_aliases(model))
    return finish(model, plan, shared, links)


def applied_copy(model: nn.Module, plan: Plan,
                 copy: Callable[[nn.Module, dict[int, object]], nn.Module]) -> nn.Module:
    """A pruned copy of ``model``, which stays untouched and shares no memory with it.

    ``copy(model, memo)`` deep-copies with a ``copy.deepcopy`` memo: it maps each layer the plan
    rebuilds to its new layer (built from ``model``'s, so cut tensors are never copied whole)
    and each parameter the plan cuts to itself. A rebuilt layer inside or around another one
    (an attention layer and its ``out_proj``) is copied and rebuilt in the copy instead.

    Example:
        >>> import copy, torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> model = LeNet()
        >>> plan = prune(model, torch.zeros(1, 1, 28, 28), ratio=0.5).plan
        >>> small = applied_copy(model, plan, lambda m, memo: copy.deepcopy(m, memo))
        >>> small.conv2, model.conv2
        (Conv2d(3, 8, kernel_size=(5, 5), stride=(1, 1)), Conv2d(6, 16, kernel_size=(5, 5), stride=(1, 1)))
    """
    modules = _by_name(model)
    shared, links = shared_tensors(model), width_links(model)
    keeps = layer_keeps(model, plan, modules)
    nested = _nested(keeps)
    surgeons, memo = default_surgeons(), {}
    for name, keep in keeps.items():
        old = _named(model, modules, name)
        if name in nested:  # copied, then rebuilt in the copy: its tensors are cut there
            memo.update((id(t), t) for t in (*old._parameters.values(), *old._buffers.values())
                        if isinstance(t, torch.Tensor))
        else:
            memo[id(old)] = rebuild(old, keep, surgeons)
    for name, attr, _ in plan.removed_params():
        t = _held(model.get_submodule(name), attr)
        if t is not None:
            memo[id(t)] = t
    target = copy(model, memo)
    swap_in(target, {n: k for n, k in keeps.items() if n in nested}, module_aliases(target))
    finish(target, plan, shared, links)
    if any(isinstance(v, torch.Tensor) for v in memo.values()):  # new layers share nothing
        unshare(target, model)
    return target


def layer_keeps(model: nn.Module, plan: Plan, modules: dict[str, nn.Module] | None = None
                ) -> dict[str, dict[int, torch.Tensor]]:
    """Layer name -> {weight dim: indices that stay} for every layer the plan rebuilds;
    ``modules``: the model's modules by name, when the caller has them already."""
    keeps: dict[str, dict[int, torch.Tensor]] = {}
    shapes: dict[str, torch.Size] = {}
    modules = _by_name(model) if modules is None else modules
    for (name, dim), removed in plan.removed_arrays().items():
        if name not in shapes:
            shapes[name] = indexed_tensor(_named(model, modules, name)).shape
        stays = np.ones(shapes[name][dim], dtype=bool)
        stays[removed] = False
        keeps.setdefault(name, {})[dim] = torch.from_numpy(np.flatnonzero(stays))
    return keeps


def swap_in(model: nn.Module, keeps: dict[str, dict[int, torch.Tensor]],
            aliases: dict[str, list[str]]) -> None:
    """Rebuild each layer of ``keeps`` and put the new one under each of its names."""
    surgeons = default_surgeons()
    for name, keep in keeps.items():
        new = rebuild(model.get_submodule(name), keep, surgeons)
        for alias in (name, *aliases.get(name, ())):
            replace(model, alias, new)


def finish(model: nn.Module, plan: Plan, shared: list[Shared], links: list) -> nn.Module:
    """After the layers: cut the parameters and size attributes the plan names, tie again the
    tensors that were shared (``shared``, taken before surgery) and follow the width links."""
    for (name, attr, dim), removed in plan.removed_params().items():
        cut_parameter(model.get_submodule(name), attr, dim, removed)
    for (name, attr, element), cut in plan.size_cuts().items():
        cut_size(model.get_submodule(name), attr, element, cut)
    for tensor in shared:
        retie(model, tensor)
    return follow_links(model, links)


def _by_name(model: nn.Module) -> dict[str, nn.Module]:
    """Every module by each of its names: one walk instead of a ``get_submodule`` per layer."""
    return dict(model.named_modules(remove_duplicate=False))


def _named(model: nn.Module, modules: dict[str, nn.Module], name: str) -> nn.Module:
    """``modules[name]``; a name it lacks goes to ``get_submodule`` for torch's own error."""
    return modules[name] if name in modules else model.get_submodule(name)


def _nested(names: Iterable[str]) -> set[str]:
    """The names that are inside, or hold, another of ``names``."""
    names, found = set(names), set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts)):
            outer = ".".join(parts[:i])
            if outer in names:
                found.update((outer, name))
    return found


def unshare(copied: nn.Module, original: nn.Module) -> None:
    """Give each parameter or buffer of ``copied`` that still shares memory with one of
    ``original``'s (one the copy was given that surgery did not replace after all) its
    own copy; tensors held twice stay one.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> twin = nn.Linear(2, 2)
        >>> twin.weight = model.weight
        >>> unshare(twin, model)
        >>> twin.weight is model.weight, torch.equal(twin.weight, model.weight)
        (False, True)
    """
    theirs = {t.untyped_storage().data_ptr() for t in (*original.parameters(),
                                                        *original.buffers()) if t.numel()}
    copies: dict[int, torch.Tensor] = {}
    for module in copied.modules():
        for store in (module._parameters, module._buffers):
            for attr, t in list(store.items()):
                if t is None or not t.numel() or t.untyped_storage().data_ptr() not in theirs:
                    continue
                if id(t) not in copies:
                    fresh = t.detach().clone()
                    copies[id(t)] = nn.Parameter(fresh, t.requires_grad) \
                        if isinstance(t, nn.Parameter) else fresh
                if attr in module._buffers:
                    module._buffers[attr] = copies[id(t)]
                else:  # setattr: nn.RNNBase keeps its weights in a list of its own too
                    setattr(module, attr, copies[id(t)])


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
