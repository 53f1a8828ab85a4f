"""Weight sharing: a layer called several times, and tensors that several modules hold.

A layer called more than once (a siamese conv, a block in a loop, a detection head applied to
every feature map) leaves one record per call on each of its weight dims. They are the same
weight positions, so ``merge_repeated`` couples them position by position and keeps one record:
the union of every call's input channels is one set, likewise the outputs. ``x = block(x)`` in
a loop so couples the block's output with its own input, which is what the stream through the
loop is. Calls whose widths differ on a dim cannot be coupled: their channels are blocked.

A tensor held by several modules (``lm_head.weight = embed.weight``; or two Parameters viewing
one memory) is cut once per holder by surgery, which then ties them again
(``surgery.rebuild.apply``). ``couple_tied`` couples, per dim of the tensor, the records of every
holder that cover it, so each holder loses the same positions; a dim that one holder's records
cover and another called one's do not blocks them, with the reason; a holder the forward never
calls (T5's ``shared`` embedding: the encoder's and decoder's embeddings hold its weight and
are called instead) is cut with them.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), conv, conv, torch.nn.Conv2d(4, 2, 1))
    >>> [m.short() for m in trace(model, torch.zeros(1, 3, 8, 8)).prunable[0].members]
    ['0.out', '1.in', '1.out', '3.in']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from graphs.channels import ChannelSets, Record
from graphs.datamodel import IN, OUT, SIZE
from graphs.kinds import indexed_tensor, layer_kind

__all__ = ["Shared", "couple_shared", "couple_tied", "layer_dims", "merge_repeated",
           "module_aliases", "shared_tensors"]


@dataclass(frozen=True)
class Shared:
    """One tensor held by several modules: (module, attribute) of each holder, the first
    holder first; ``same`` when it is one object (else Parameters viewing one memory)."""

    holders: tuple[tuple[str, str], ...]
    shape: tuple[int, ...]
    same: bool


def couple_shared(sets: ChannelSets, model: nn.Module, calls: dict[str, int]) -> None:
    """``merge_repeated`` then ``couple_tied``: what ``graphs.trace`` runs before grouping."""
    merge_repeated(sets, calls)
    couple_tied(sets, model)


def merge_repeated(sets: ChannelSets, calls: dict[str, int]) -> None:
    """Records of one (module, role, dim, attr) become one: later ones are coupled with the first
    position by position. ``calls``: module -> how many times it was called (for the reasons).

    A size attribute counting positions of different lengths keeps its records (each counts a
    prefix); weight records of different widths are kept, and blocked.

    Example:
        >>> sets = ChannelSets()
        >>> a, b = sets.fresh(2), sets.fresh(2)
        >>> sets.record("conv", "in", 1, a); sets.record("conv", "in", 1, b)
        >>> merge_repeated(sets, {"conv": 2})
        >>> len(sets.records), sets.components().tolist()
        (1, [0, 1, 0, 1])
    """
    by_key: dict[tuple, list[Record]] = {}
    for rec in sets.records:
        by_key.setdefault((rec.module, rec.role, rec.dim, rec.attr), []).append(rec)
    drop: set[int] = set()
    for (module, role, dim, _), recs in by_key.items():
        if len(recs) < 2:
            continue
        if len({r.ids.shape[0] for r in recs}) > 1:
            if role != SIZE:
                for r in recs:
                    sets.block(r.ids, f"layer {module} is called {calls.get(module, len(recs))} "
                                      f"times with different widths on its {role} dim {dim}")
            continue
        for r in recs[1:]:
            sets.union(recs[0].ids, r.ids)
            drop.add(id(r))
    sets.records = [r for r in sets.records if id(r) not in drop]


def couple_tied(sets: ChannelSets, model: nn.Module) -> None:
    """For each tensor several modules hold and each of its dims: couple the records of every
    holder that cover the dim position by position. A holder the forward never calls follows
    (it gets a record there, so surgery cuts it alike); a called holder with no record on a dim
    others cover, or widths that differ, block them all, with the reason.

    Example:
        >>> sets = ChannelSets()
        >>> model = nn.ModuleDict({"embed": nn.Embedding(5, 3), "head": nn.Linear(3, 5)})
        >>> model.head.weight = model.embed.weight
        >>> a, b = sets.fresh(3), sets.fresh(3)
        >>> sets.record("embed", "out", 1, a); sets.record("head", "in", 1, b)
        >>> couple_tied(sets, model)
        >>> sets.same_channels(a, b), sets.blocks
        (True, [])
    """
    by_module: dict[str, list[Record]] = {}
    for rec in sets.records:
        by_module.setdefault(rec.module, []).append(rec)
    followed: set[tuple] = set()
    for shared in shared_tensors(model):
        covering = _covering(by_module, model, shared)
        for dim in range(len(shared.shape)):
            found = [covering.get((h, dim), []) for h in shared.holders]
            recs = [r for per in found for r in per]
            if not recs:
                continue
            follow = [None if per or h[0] in by_module else _follower(model, h, dim)
                      for h, per in zip(shared.holders, found)]
            problem = _tie_problem(shared, dim, found, follow)
            for r in recs[1:] if not problem else ():
                sets.union(recs[0].ids, r.ids)
            for r in recs if problem else ():
                sets.block(r.ids, problem)
            for (module, _), how in zip(shared.holders, follow):
                if how is not None and not problem and (module, *how) not in followed:
                    followed.add((module, *how))  # once, where it holds two shared tensors
                    sets.record(module, how[0], how[1], recs[0].ids, how[2])


def _follower(model: nn.Module, holder: tuple[str, str], dim: int) -> tuple | None:
    """(role, dim, attr) of the record that makes a holder the forward never calls cut dim
    ``dim`` of its shared tensor with the others: its layer weight dim, or (a module of no
    layer kind) the parameter by name; None when its surgeon would not cut that dim."""
    module = model.get_submodule(holder[0])
    kind = layer_kind(module)
    if kind is None:
        return OUT, dim, holder[1]
    layer_dim = layer_dims(module, holder[1]).get(dim) if kind.reference else None
    if layer_dim is None:
        return None
    return OUT if layer_dim == kind.out_dim else IN, layer_dim, ""


def _tie_problem(shared: Shared, dim: int, found: list[list[Record]], follow: list) -> str:
    """Why the holders' records on ``dim`` of a shared tensor cannot be coupled, or ""."""
    names = [f"{m}.{a}" if a else m for m, a in shared.holders]
    missing = [n for n, per, how in zip(names, found, follow) if not per and how is None]
    widths = {r.ids.shape[0] for per in found for r in per}
    if not missing and len(widths) == 1:
        return ""
    first = shared.holders[0][0]
    others = ", ".join(dict.fromkeys(m for m, _ in shared.holders[1:]))
    why = f"{', '.join(missing)} uses no channels on its dim {dim}" if missing else \
        f"its holders use dim {dim} with different widths {sorted(widths)}"
    return f"layer {first} shares a parameter with {others} (tied weights), and {why}"


def _covering(by_module: dict[str, list[Record]], model: nn.Module,
              shared: Shared) -> dict[tuple[tuple[str, str], int], list[Record]]:
    """(holder, tensor dim) -> the records on that dim of the shared tensor (non-SIZE records
    naming the parameter, or a layer's weight-dim records whose surgeon cuts it there);
    ``by_module``: the trace's records by module."""
    found: dict[tuple[tuple[str, str], int], list[Record]] = {}
    for holder in shared.holders:
        recs = [r for r in by_module.get(holder[0], []) if r.role != SIZE]
        weight_dims = layer_dims(model.get_submodule(holder[0]), holder[1]) if recs else {}
        for rec in recs:
            if rec.attr:
                dims = [rec.dim] if rec.attr == holder[1] else []
            else:
                dims = [t for t, d in weight_dims.items() if d == rec.dim]
            for tensor_dim in dims:
                found.setdefault((holder, tensor_dim), []).append(rec)
    return found


def layer_dims(module: nn.Module, attr: str) -> dict[int, int]:
    """Tensor dim -> layer weight dim, for the dims of ``module``'s tensor ``attr`` that its
    surgeon cuts with the layer's channels (as ``surgery.rebuild.respawn`` does): a tensor
    shaped like the layer's reference along every dim, one whose first dim is the output width
    along it; {} for anything else, or a module of no layer kind.

    Example:
        >>> layer_dims(nn.Linear(3, 5), "weight"), layer_dims(nn.Linear(3, 5), "bias")
        ({0: 0, 1: 1}, {0: 0})
    """
    kind, tensor = layer_kind(module), getattr(module, attr, None)
    reference = indexed_tensor(module) if kind is not None else None
    if not isinstance(tensor, torch.Tensor) or kind is None:
        return {}
    if reference is not None and tensor.shape == reference.shape:
        return {d: d for d in range(tensor.dim())}
    if kind.width is not None and tensor.dim() >= 1 and tensor.shape[0] == kind.width(module):
        return {0: kind.out_dim}
    return {}


def shared_tensors(model: nn.Module) -> list[Shared]:
    """Each parameter or buffer that several distinct modules hold, or that shares its memory
    with another one (``c3.weight.data = c2.weight.data``: two Parameters, one storage).
    A module registered under several names is one holder, named by its first name.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
        >>> model[2].weight = model[1].weight
        >>> shared_tensors(model)
        [Shared(holders=(('1', 'weight'), ('2', 'weight')), shape=(4, 4), same=True)]
    """
    owners: dict[object, list[tuple[str, str, torch.Tensor]]] = {}
    for name, module in model.named_modules():  # one name per module object
        for attr, t in _tensors(module):
            owners.setdefault(_memory_key(t), []).append((name, attr, t))
    found = []
    for held in owners.values():
        if len(held) > 1:
            same = all(t is held[0][2] for _, _, t in held)
            found.append(Shared(tuple((n, a) for n, a, _ in held), tuple(held[0][2].shape), same))
    return found


def _tensors(module: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    for store in (module._parameters, module._buffers):
        yield from ((a, t) for a, t in store.items() if isinstance(t, torch.Tensor))


def module_aliases(model: nn.Module) -> dict[str, list[str]]:
    """First name -> the other names of a module registered under several names (T5's
    ``shared`` is also ``encoder.embed_tokens``).

    Example:
        >>> inner = nn.Linear(2, 2)
        >>> module_aliases(nn.ModuleDict({"a": inner, "b": nn.Sequential(inner)}))
        {'a': ['b.0']}
    """
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if name not in names.setdefault(id(module), []):
            names[id(module)].append(name)
    return {n[0]: n[1:] for n in names.values() if len(n) > 1}


def _memory_key(t: torch.Tensor) -> object:
    """What identifies a tensor's values: its memory (device, storage address, offset, shape,
    strides, dtype), so that two Parameters viewing the same memory are one; the object itself
    where there is no memory to compare (meta, empty or storage-less tensors)."""
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensor subclasses without a storage
        return id(t)
    if t.is_meta or t.numel() == 0 or ptr == 0:
        return id(t)
    return (str(t.device), ptr, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
