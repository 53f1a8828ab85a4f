"""The config of a pruned Hugging Face model: its widths read from its layers, one per role.

``FAMILIES`` says, per transformers ``model_type``, which config field holds the MLP hidden
width and which layers hold each width (name patterns, ``*`` a layer index): the MLP's first
projection, the query projection (heads x head_dim features; GPT-2's ``c_attn`` stacks q, k
and v) and, with grouped-query attention, the key projection. ``pruned_config`` reads every
layer's widths from the pruned model and writes them into a copy of its config
(``hidden_size``, the MLP field, ``num_attention_heads``, ``num_key_value_heads``,
``head_dim``; transformers maps each family's own names, GPT-2's ``n_embd`` and ``n_head``).
A config holds one width per role, so layers that differ are refused, naming them.

Nothing here imports transformers: a model is read through its ``config`` attribute.

Example:
    >>> from types import SimpleNamespace
    >>> config = SimpleNamespace(model_type="llama", hidden_size=64, num_attention_heads=4,
    ...                          head_dim=16)
    >>> family_of(SimpleNamespace(config=config)).intermediate, head_dim(config)
    ('intermediate_size', 16)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from surgery.errors import SurgeryError
from surgery.plan.uniform import Tie, name_regex


@dataclass(frozen=True)
class Family:
    """Where one transformers family keeps each width (name patterns, ``*`` a layer index)."""

    intermediate: str  # the config field of the MLP hidden width
    mlp: str  # the layer whose output features are the MLP hidden width
    query: str  # the layer whose output features are the query heads x head_dim
    key: str = ""  # with grouped-query attention: the key heads x head_dim
    own_head_dim: bool = True  # the config has a head_dim field (else hidden / heads)
    stacked: int = 1  # the query layer stacks q, k and v (GPT-2's c_attn: 3)
    embedding: str = ""  # the layer producing the stream, for the Tie below
    divisible: bool = False  # the config checks that hidden_size is a multiple of the heads


_LLAMA = Family("intermediate_size", "layers.*.mlp.up_proj", "layers.*.self_attn.q_proj",
                "layers.*.self_attn.k_proj", embedding="embed_tokens", divisible=True)
FAMILIES = {
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "vit": Family("intermediate_size", "layers.*.mlp.fc1", "layers.*.attention.q_proj"),
    "bert": Family("intermediate_size", "layer.*.intermediate.dense",
                   "layer.*.attention.self.query", own_head_dim=False,
                   embedding="embeddings.word_embeddings"),
    "gpt2": Family("n_inner", "h.*.mlp.c_fc", "h.*.attn.c_attn", own_head_dim=False,
                   stacked=3, embedding="wte"),
}


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a transformers model (it has a config with a ``model_type``).

    Example:
        >>> is_hf_model(nn.Linear(2, 2))
        False
    """
    return isinstance(getattr(getattr(model, "config", None), "model_type", None), str)


def family_of(model: Any) -> Family:
    """The ``Family`` of a transformers model; SurgeryError naming the known ones otherwise."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in FAMILIES:
        raise SurgeryError(f"the Hugging Face export knows model types {', '.join(FAMILIES)}, "
                           f"not {str(kind)[:40]!r}: reload the folder with surgery.load")
    return FAMILIES[kind]


def head_dim(config: Any) -> int:
    """The head size of a config: its ``head_dim`` field, else hidden_size / heads."""
    own = getattr(config, "head_dim", None)
    return own if isinstance(own, int) and own > 0 else \
        config.hidden_size // config.num_attention_heads


def hf_ties(model: Any) -> tuple[Tie, ...]:
    """The ``Tie`` a transformers model's config imposes on a uniform prune: the width is
    heads x head_dim where the family derives the head size from it (BERT, GPT-2), a multiple
    of the heads where the config checks that (Llama); () for any other model.

    Example:
        >>> hf_ties(nn.Linear(2, 2))
        ()
    """
    kind = getattr(getattr(model, "config", None), "model_type", None)
    family = FAMILIES.get(kind) if is_hf_model(model) else None
    if family is None or not family.embedding:
        return ()
    return (Tie(family.embedding, family.query, head_dim(model.config),
                exact=not family.own_head_dim),)


def out_width(layer: nn.Module) -> int:
    """Output features of a Linear (``out_features``) or of GPT-2's Conv1D (``nf``)."""
    width = getattr(layer, "out_features", None)
    return width if isinstance(width, int) else int(layer.weight.shape[-1])


def in_width(layer: nn.Module) -> int:
    """Input features of a Linear (``in_features``) or of GPT-2's Conv1D (weight rows)."""
    width = getattr(layer, "in_features", None)
    return width if isinstance(width, int) else int(layer.weight.shape[0])


def layer_widths(model: nn.Module, pattern: str, per: int = 1,
                 width: Callable[[nn.Module], int] = out_width) -> dict[str, int]:
    """Module name -> ``width(module) // per`` for every module matching ``pattern``."""
    regex = name_regex(pattern)
    return {name: width(m) // per for name, m in model.named_modules() if regex.search(name)}


def one_width(widths: dict[str, int], field: str) -> int:
    """The one value of ``widths`` (layer -> width); SurgeryError naming the layers that
    differ when there are several (a config holds one ``field`` for all layers).

    Example:
        >>> one_width({"h.0.mlp.c_fc": 128, "h.1.mlp.c_fc": 128}, "n_inner")
        128
    """
    if not widths:
        raise SurgeryError(f"no layer holds the config's {field}: not the layout this "
                           f"family's export knows; reload the folder with surgery.load")
    values = sorted(set(widths.values()))
    if len(values) > 1:
        first = {v: next(n for n, w in widths.items() if w == v) for v in values}
        shown = ", ".join(f"{n} keeps {v}" for v, n in list(first.items())[:3])
        raise SurgeryError(f"the config holds one {field} for all layers, but the layers "
                           f"differ ({shown}): prune with uniform=True (--uniform), or reload "
                           f"the pruned folder with surgery.load")
    return values[0]


def pruned_config(model: nn.Module) -> Any:
    """A copy of ``model.config`` holding the widths of the pruned ``model``'s layers;
    SurgeryError when the layers of a role differ or the family derives the head size
    from a width that no longer gives it."""
    family, config = family_of(model), copy.deepcopy(model.config)
    size = head_dim(model.config)
    query = layer_widths(model, family.query, size * family.stacked)
    heads = one_width(query, "num_attention_heads")
    hidden = one_width(layer_widths(model, family.query, width=in_width), "hidden_size")
    intermediate = one_width(layer_widths(model, family.mlp), family.intermediate)
    if family.key:
        config.num_key_value_heads = one_width(layer_widths(model, family.key, size),
                                               "num_key_value_heads")
    if family.own_head_dim:
        config.head_dim = size
    elif hidden != heads * size:
        raise SurgeryError(f"{config.model_type}'s config derives the head size from "
                           f"hidden_size / num_attention_heads, but {hidden} / {heads} is not "
                           f"the weights' {size}: prune with uniform=True (--uniform), which "
                           f"ties them, or reload the pruned folder with surgery.load")
    config.hidden_size, config.num_attention_heads = hidden, heads
    setattr(config, family.intermediate, intermediate)
    return config


__all__ = ["FAMILIES", "Family", "family_of", "head_dim", "hf_ties", "in_width",
           "is_hf_model", "layer_widths", "one_width", "out_width", "pruned_config"]
