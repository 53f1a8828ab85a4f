"""The one layer-kind table: everything that needs to know about a kind of layer reads it here.

A layer's *kind* is decided from what it holds, never from its exact class: any subclass of
torch's conv base class is a ``conv``, any ``nn.Linear`` subclass a ``linear``, a module with a
packed ``in_proj_weight`` an ``attention`` layer. One ``LayerKind`` entry says

* what the kind is (``holds``) and the torch functions its forward calls with its own
  parameters (``functions``), with the coupling rule of those calls (``rule``; a ``leaf`` kind
  is captured whole, one ``call_module`` node, and its rule reads the module);
* the tensor a group member's weight dim indexes (``reference``; none: its members name its
  parameters, cut one by one, and it needs no surgeon) and the weight dim of its output
  channels (``out_dim``);
* its output width, the axis of its input (and output) that carries channels, how many
  channels a call of its functions expects, read from the call's tensors (``width``,
  ``channel_axis``, ``expects``), and the size attributes its tensors imply (``sizes``);
* how to build a plain copy of another width for timing (``resize``) and whether it
  normalises its input (``norm``); the MACs of ops fvcore leaves uncounted (``mac_ops``,
  ``macs``).

The tracer (``graphs.rules``), the channel checks (``graphs.checks``), the surgeons
(registered by kind name in ``surgery.rebuild.surgeons``), lint, the MAC and latency models,
the activation criteria and the docs' table all read ``KINDS``. Adding a kind is one entry
here, one surgeon and one test.

Example:
    >>> from torch import nn
    >>> class MyConv(nn.Conv2d):
    ...     pass
    >>> layer_kind(MyConv(3, 8, 3)).name, layer_kind(nn.BatchNorm1d(4)).name
    ('conv', 'batch_norm')
    >>> layer_kind(nn.ReLU()) is None
    True
    >>> [k.name for k in KINDS]
    ['attention', 'conv_transpose', 'conv', 'linear', 'batch_norm', 'layer_norm', 'group_norm', \
'rms_norm', 'embedding', 'recurrent']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from graphs import kind_maths as maths
from graphs.datamodel import SIZE
from graphs.rules import attention, layers, norms, recurrent
from graphs.rules.table import Rule

Sizes = Callable[[nn.Module, torch.Tensor], list[tuple[str, Any]]]
Expects = Callable[[tuple, dict], "tuple[int, int] | None"]
Resize = Callable[[nn.Module, Mapping[int, int]], "nn.Module | None"]


@dataclass(frozen=True)
class LayerKind:
    """One kind of layer: how it is recognised, traced, checked, rebuilt, measured."""

    name: str
    description: str  # what ``holds`` tests, in words (the docs' table)
    holds: Callable[[nn.Module], bool]
    rule: Rule  # the coupling rule of ``functions`` (of the module itself when ``leaf``)
    functions: tuple[Any, ...] = ()  # torch functions its forward calls with its own tensors
    leaf: bool = False  # captured whole: one call_module node, nothing inside recorded
    reference: tuple[str, ...] = ("weight",)  # a member's weight dim indexes the first present
    out_dim: int = 0  # the reference tensor's dim of the output channels
    width: Callable[[nn.Module], int] | None = None  # output width
    channel_axis: int | None = None  # the input's (and output's) axis of channels
    expects: Expects | None = None  # (input dim, channels) a call of ``functions`` expects
    sizes: Sizes = maths.no_sizes  # (size attribute, value implied by the reference tensor)
    resize: Resize | None = None  # a plain copy with weight dim d of size sizes[d] (timing)
    norm: bool = False  # normalises its input (activation criteria watch norms first)
    mac_ops: tuple[str, ...] = ()  # jit ops of its forward that fvcore does not count ...
    macs: Callable[[int, list[tuple[int, ...]]], int] | None = None  # ... their MACs from
    #   (steps: input positions, weight matrix shapes)


def _normalized(m: nn.Module) -> tuple[int, ...]:
    return tuple(m.normalized_shape)


KINDS: tuple[LayerKind, ...] = (  # first match wins
    LayerKind("attention", "holds `in_proj_weight` (packed q, k, v; or None beside "
              "`q/k/v_proj_weight`), heads and an `out_proj` Linear (`nn.MultiheadAttention`)",
              attention.packed_attention, attention.multihead_attention,
              leaf=True, reference=("weight", "in_proj_weight", "q_proj_weight"),
              sizes=attention.attention_sizes),
    LayerKind("conv_transpose", "is a `torch.nn.modules.conv._ConvTransposeNd`",
              lambda m: isinstance(m, _ConvTransposeNd), layers.conv_transpose,
              layers.CONV_TRANSPOSES, out_dim=1, width=lambda m: m.out_channels,
              channel_axis=1, expects=maths.expects_conv_transpose, sizes=maths.sizes_conv_transpose),
    LayerKind("conv", "is a `torch.nn.modules.conv._ConvNd` (any `nn.Conv*d` subclass)",
              lambda m: isinstance(m, _ConvNd), layers.conv, layers.CONVS,
              width=lambda m: m.out_channels, channel_axis=1, expects=maths.expects_conv, sizes=maths.sizes_conv, resize=maths.resize_conv),
    LayerKind("linear", "is an `nn.Linear`", lambda m: isinstance(m, nn.Linear),
              layers.linear, (F.linear,), width=lambda m: m.out_features,
              channel_axis=-1, expects=maths.expects_linear, sizes=maths.sizes_linear,
              resize=maths.resize_linear),
    LayerKind("batch_norm", "is a `torch.nn.modules.batchnorm._NormBase` (batch/instance norm)",
              lambda m: isinstance(m, _NormBase), norms.batch_norm,
              (F.batch_norm, F.instance_norm), reference=("weight", "running_mean"),
              width=lambda m: m.num_features, channel_axis=1,
              expects=maths.expects_batch_norm,
              sizes=maths.sizes_batch_norm, norm=True),
    LayerKind("layer_norm", "is an `nn.LayerNorm`", lambda m: isinstance(m, nn.LayerNorm),
              norms.layer_norm, (F.layer_norm,), width=lambda m: math.prod(_normalized(m)),
              channel_axis=-1, expects=maths.expects_last_dim_norm, sizes=maths.sizes_layer_norm, norm=True),
    LayerKind("group_norm", "is an `nn.GroupNorm`", lambda m: isinstance(m, nn.GroupNorm),
              norms.group_norm, (F.group_norm,), width=lambda m: m.num_channels,
              channel_axis=1, expects=maths.expects_group_norm, sizes=maths.sizes_group_norm, norm=True),
    LayerKind("rms_norm", "is an `nn.RMSNorm`", lambda m: isinstance(m, nn.RMSNorm),
              norms.rms_norm, (F.rms_norm,), width=lambda m: math.prod(_normalized(m)),
              channel_axis=-1, expects=maths.expects_last_dim_norm, sizes=maths.sizes_layer_norm, norm=True),
    LayerKind("embedding", "is an `nn.Embedding` (its features: weight dim 1)",
              lambda m: isinstance(m, nn.Embedding), layers.embedding, (F.embedding,),
              out_dim=1, width=lambda m: m.embedding_dim),
    LayerKind("recurrent", "is an `nn.RNNBase` (`nn.LSTM`, `nn.GRU`, `nn.RNN`)",
              lambda m: isinstance(m, nn.RNNBase), recurrent.recurrent, leaf=True,
              reference=(), width=lambda m: m.proj_size or m.hidden_size, channel_axis=-1,
              sizes=maths.sizes_recurrent,
              mac_ops=("aten::lstm", "aten::gru", "aten::rnn_tanh", "aten::rnn_relu"),
              macs=maths.recurrent_macs),
)

LAYER_FUNCTIONS = frozenset(f for kind in KINDS for f in kind.functions)
"""Every torch function a kind calls with its own parameters."""


def layer_kind(module: nn.Module) -> LayerKind | None:
    """The first entry of ``KINDS`` that holds ``module``; None for other modules."""
    return next((kind for kind in KINDS if kind.holds(module)), None)


def function_kind(func: Any) -> LayerKind | None:
    """The kind whose forward calls ``func`` with its own parameters, or None.

    Example:
        >>> function_kind(F.linear).name, function_kind(torch.relu)
        ('linear', None)
    """
    try:
        return next((k for k in KINDS if func in k.functions), None)
    except TypeError:  # an unhashable callable
        return None


def indexed_tensor(module: nn.Module) -> torch.Tensor | None:
    """What a group member's weight dim indexes: the kind's first present ``reference`` tensor
    (``weight``; attention's packed ``in_proj_weight`` or ``q_proj_weight``; a norm's running
    stats), else ``weight``.

    Example:
        >>> tuple(indexed_tensor(nn.BatchNorm2d(4, affine=False)).shape)
        (4,)
        >>> tuple(indexed_tensor(nn.MultiheadAttention(8, 2)).shape)
        (24, 8)
    """
    kind = layer_kind(module)
    fresh = _old_weight_norm(module)
    if fresh is not None:
        return fresh
    for attr in kind.reference if kind is not None else ("weight",):
        tensor = getattr(module, attr, None)
        if isinstance(tensor, torch.Tensor):
            return tensor
    return None


def _old_weight_norm(module: nn.Module) -> torch.Tensor | None:
    """The weight of the old ``torch.nn.utils.weight_norm`` computed now from its g and v (its
    ``weight`` attribute is only refreshed by the next forward)."""
    g, v = (module._parameters.get(n) for n in ("weight_g", "weight_v"))
    hook = next((h for h in module._forward_pre_hooks.values()
                 if getattr(h, "name", None) == "weight" and hasattr(h, "dim")), None)
    if g is None or v is None or hook is None:
        return None
    with torch.no_grad():
        return torch._weight_norm(v, g, hook.dim)


def member_tensor(model: nn.Module, member) -> torch.Tensor | None:
    """The tensor a group member's dim indexes: the parameter (or buffer) it names
    (``member.attr``), else the layer's ``indexed_tensor``; None for a SIZE member.

    Example:
        >>> from graphs.datamodel import Member
        >>> model = nn.Sequential(nn.Linear(2, 3))
        >>> tuple(member_tensor(model, Member("0", "out", 0, (), "bias")).shape)
        (3,)
    """
    if member.role == SIZE:
        return None
    module = model.get_submodule(member.module)
    if member.attr:
        tensor = module._parameters.get(member.attr)
        tensor = module._buffers.get(member.attr) if tensor is None else tensor
        return tensor if isinstance(tensor, torch.Tensor) else None
    return indexed_tensor(module)


def kind_table_markdown() -> str:
    """The docs' table of layer kinds: what each holds, how it is traced, what is checked.

    Example:
        >>> print(kind_table_markdown().splitlines()[0])
        | kind | a layer is of this kind when it | traced as | coupling rule | input channels |
    """
    head = "| kind | a layer is of this kind when it | traced as | coupling rule | input channels |"
    lines = [head, "|---|---|---|---|---|"]
    for kind in KINDS:
        calls = "the whole module" if kind.leaf else ", ".join(
            f"`{getattr(f, '__name__', f)}`" for f in kind.functions)
        rule = f"`{kind.rule.__module__.rpartition('.')[2]}.{kind.rule.__name__}`"
        axis = "not checked" if kind.channel_axis is None else f"checked on axis {kind.channel_axis}"
        lines.append(f"| `{kind.name}` | {kind.description} | {calls} | {rule} | {axis} |")
    return "\n".join(lines)
