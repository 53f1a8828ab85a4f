"""Removable blocks: modules whose forward computes ``out = x + branch(x)`` on one stream.

A block is a module (a qualified name) called once, that reads one float *stream* tensor ``x``
(other inputs, such as masks or rotary tables, may come too) and hands on one tensor ``out`` of
x's shape, reached from x through *trunk* ops only: residual adds ``t + b`` whose other operand
``b`` (the *branch*) is computed from x inside the module, plus ops that leave a zeroed branch
as it is: dropout, copies and reshapes (exact: they keep the row-major order, and ``out``
has x's shape), a ReLU when x is already non-negative (torchvision's
``relu(x + f(x))`` after a ReLU: exact), or a norm (BERT's post-LN ``LN(x + f(x))``: removing
the block is *not* the zeroed branch, ``Block.inexact`` says so). Replacing a block by the
identity of its stream leaves every shape as it is.

Of nested candidates the block is the smallest module holding a residual add that no smaller
candidate holds, and no candidate inside a block is one too: timm's ViT ``Block`` (its two
adds) rather than its ``blocks`` Sequential, BERT's ``BertLayer`` rather than its
``BertAttention``, torchvision's ``BasicBlock`` without downsample.

``Block.zero`` names the parameters whose zeroing makes every branch exactly 0 (the last
layer of each branch: a projection, a BatchNorm's affine, a layer scale), what the exactness
oracle zeroes; empty when some branch ends in an op without parameters.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> blocks = find_blocks(resnet18(), torch.zeros(1, 3, 32, 32))
    >>> [b.module for b in blocks]
    ['layer1.0', 'layer1.1', 'layer2.1', 'layer3.1', 'layer4.1']
    >>> blocks[0].zero, blocks[0].inexact
    (('layer1.0.bn2.weight', 'layer1.0.bn2.bias'), '')
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from graphs.capture import capture
from graphs.rules.defaults import default_rules

ADDS = frozenset({operator.add, operator.iadd, torch.add, "add", "add_", "__add__",
                  "__iadd__", "__radd__"})
COPIES = frozenset({F.dropout, F.dropout1d, F.dropout2d, "contiguous", "clone", "to", "float",
                    "type_as", "detach"})  # the value passes unchanged (eval mode)
RELUS = frozenset({torch.relu, torch.relu_, F.relu, "relu", "relu_"})
NORMS = frozenset({F.layer_norm, F.rms_norm, F.batch_norm, F.group_norm})
NONNEGATIVE_KEEPING = frozenset({F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.max_pool2d,
                                 F.adaptive_avg_pool2d, F.avg_pool2d, F.adaptive_max_pool2d})
POST_NORM = "post-norm: out = norm(x + f(x)), removing it is not the zeroed branch"
ZERO_KEEPING = frozenset({torch.relu, F.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.mish,
                          F.leaky_relu, torch.tanh, "relu"})  # f(0) == 0: a zero stays 0
RESHAPES = frozenset({"view", "reshape", "flatten", "unflatten", torch.reshape, torch.flatten})
# ^ row-major order kept: a chain of them that ends at x's shape is the identity
MOVES = frozenset({"permute", "transpose", "roll", "__getitem__", torch.roll, torch.permute,
                   torch.transpose, operator.getitem})  # data movement: zeros stay zeros
SCALES = frozenset({operator.mul, torch.mul, "mul", "mul_", "__mul__", "__rmul__"})


@dataclass(frozen=True)
class Block:
    """A removable residual block: its module name, the parameters that zero its branches,
    and why removing it is not the zeroed branch ("" when it is)."""

    module: str
    zero: tuple[str, ...]
    inexact: str = ""


def find_blocks(model: nn.Module, example_inputs: Any) -> tuple[Block, ...]:
    """The removable blocks of ``model`` called on ``example_inputs``, in forward order (see
    the module docstring).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
        >>> find_blocks(model, torch.zeros(1, 4))
        ()
    """
    table = default_rules()
    graph = capture(model, example_inputs, leaf=lambda m: table.kind_of(m) is not None).graph
    owners = _owners(graph, _shared(model))
    scopes: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        name = owners[node]
        parts = name.split(".") if name else []
        for i in range(1, len(parts) + 1):
            scopes.setdefault(".".join(parts[:i]), []).append(node)
    found = {}
    for name, members in scopes.items():
        adds = _residual_adds(members)
        if adds is not None:
            found[name] = adds
    params = {name for name, _ in model.named_parameters()}
    return tuple(_block(name, found[name][1], found[name][2], params)
                 for name in _smallest(found))


def _shared(model: nn.Module) -> tuple[str, ...]:
    """Names (the first, which the capture records) of modules registered under several names:
    ultralytics' one ``SiLU`` every ``Conv`` holds."""
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return tuple(n[0] for n in names.values() if len(n) > 1 and n[0])


def _owners(graph: fx.Graph, shared: tuple[str, ...]) -> dict[fx.Node, str]:
    """Node -> the module whose forward made it; a call in a shared module belongs to the
    deepest module holding both the modules of its inputs and those of its users."""
    def is_shared(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") for s in shared)

    owners = {n: n.meta.get("module") or "" for n in graph.nodes}
    for node in graph.nodes:
        if is_shared(owners[node]):
            around = [owners[a] for a in _args(node) if a.op != "get_attr"] + \
                [owners[u] for u in node.users]
            around = [a.split(".") for a in around if not is_shared(a)]
            common = []
            for parts in zip(*around) if around else ():
                if len(set(parts)) != 1:
                    break
                common.append(parts[0])
            owners[node] = ".".join(common)
    return owners


def _smallest(found: dict[str, tuple]) -> list[str]:
    """Candidates holding an add that no candidate inside them holds; none inside another."""
    def inside(a: str, b: str) -> bool:
        return a.startswith(b + ".")

    own = {}
    for name, (adds, _, _) in found.items():
        inner = [found[o][0] for o in found if inside(o, name)]
        own[name] = any(all(a not in other for other in inner) for a in adds)
    chosen = [n for n in found if own[n]]
    return [n for n in chosen if not any(inside(n, o) for o in chosen)]


def _residual_adds(members: list[fx.Node]) -> tuple[set, list, str] | None:
    """(trunk adds, their branch operands, why inexact) when ``members`` (one module's nodes)
    form a block, else None."""
    scope = set(members)
    outside = [n for n in members if _is_float(n) and any(u not in scope for u in _users(n))]
    streams = [n for n in outside if any(u.op != "output" and u not in scope
                                         for u in _users(n))]
    streams = streams or outside  # a block at the very end feeds the model's output only
    if len(streams) != 1:
        return None
    out = streams[0]
    inputs = {a for n in members for a in _args(n) if a not in scope and a.op != "get_attr"}
    same = [a for a in inputs if _is_float(a) and _shape(a) == _shape(out)]
    if len(same) != 1:
        return None
    found = _trunk(out, same[0], scope)
    if found is None or not found[0]:
        return None
    adds, branches, inexact = found
    return set(adds), branches, inexact


def _trunk(node: fx.Node, x: fx.Node, scope: set) -> tuple[list, list, str] | None:
    """(adds, branches, inexact) of the trunk from ``x`` to ``node``, or None."""
    if node is x:
        return [], [], ""
    if node not in scope or node.op not in ("call_function", "call_method"):
        return None
    args = [a for a in node.args if isinstance(a, fx.Node)]
    if node.target in ADDS and len(args) == 2 and _shape(args[0]) == _shape(args[1]):
        for trunk, branch in ((args[0], args[1]), (args[1], args[0])):
            found = _trunk(trunk, x, scope)
            if found is not None and _reaches(branch, x, scope) and branch is not x:
                return found[0] + [node], found[1] + [branch], found[2]
        return None
    if not args or _shape(node) != _shape(args[0]) and node.target not in RESHAPES:
        return None
    found = _trunk(args[0], x, scope)
    if found is None or node.target in COPIES or node.target in RESHAPES:
        return found
    if node.target in RELUS:
        return found if _nonnegative(x) else None
    if node.target in NORMS:
        return found[0], found[1], POST_NORM
    return None


def _nonnegative(node: fx.Node, depth: int = 4) -> bool:
    """Whether ``node`` is a ReLU's output (through max/avg pools and copies)."""
    if depth == 0 or node.op not in ("call_function", "call_method"):
        return False
    if node.target in RELUS:
        return True
    args = [a for a in node.args if isinstance(a, fx.Node)]
    if node.target in NONNEGATIVE_KEEPING or node.target in COPIES:
        return bool(args) and _nonnegative(args[0], depth - 1)
    return False


def _reaches(node: fx.Node, x: fx.Node, scope: set) -> bool:
    """Whether ``node`` is computed from ``x`` within ``scope``."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n is x:
            return True
        if n in seen or n not in scope:
            continue
        seen.add(n)
        todo.extend(_args(n))
    return False


def _block(name: str, branches: list, inexact: str, params: set[str]) -> Block:
    zero = [tuple(p for p in _branch_end(b) if p in params) for b in branches]
    names = () if any(not z for z in zero) else tuple(dict.fromkeys(p for z in zero for p in z))
    return Block(name, names, inexact)


def _branch_end(node: fx.Node) -> tuple[str, ...]:
    """The parameters of the last op with parameters on the branch ending at ``node``: zeroed,
    the branch is 0 (a projection, a norm's affine, a layer scale); () if not found."""
    for _ in range(16):
        params = tuple(a.target for a in _args(node) if a.op == "get_attr")
        if params:
            return params if node.target not in ADDS else ()
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if not args or not (node.target in COPIES or node.target in SCALES or
                            node.target in ZERO_KEEPING or
                            node.target in MOVES or node.target in RESHAPES):
            return ()
        node = args[0]
    return ()


def _users(node: fx.Node) -> list[fx.Node]:
    """The nodes that use ``node``'s values (a size read is not one: it records no module)."""
    return [u for u in node.users if not (u.op == "call_method" and u.target == "size")]


def _args(node: fx.Node) -> Iterable[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _shape(node: fx.Node) -> tuple | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def _is_float(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return hasattr(meta, "dtype") and meta.dtype.is_floating_point
