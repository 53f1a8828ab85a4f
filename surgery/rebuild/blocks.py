"""Remove whole residual blocks (``graphs.blocks``): each becomes the identity of its stream.

A block in a Hugging Face layer list (an ``nn.ModuleList`` as long as its owner's
``config.num_hidden_layers``) leaves the list: the kept layers keep their names (so state-dict
keys and plan names stay valid; the list is iterated, as HF models do, not indexed), each
``layer_idx`` (what caches and masks index) becomes the layer's new position, and the config's
``num_hidden_layers`` and ``layer_types`` follow. Any other block is replaced by ``Skip``,
which returns its stream input.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> model = resnet18().eval()
    >>> remove_blocks(model, ["layer1.1"])
    >>> model.layer1[1]
    Skip()
    >>> model(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 1000])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from surgery.errors import SurgeryError


class Skip(nn.Module):
    """A removed residual block: returns its stream, the first positional tensor argument
    (else the ``hidden_states`` keyword, else the only tensor keyword).

    Example:
        >>> Skip()(torch.ones(2), torch.zeros(3)).tolist()
        [1.0, 1.0]
    """

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args and isinstance(args[0], torch.Tensor):
            return args[0]
        if isinstance(kwargs.get("hidden_states"), torch.Tensor):
            return kwargs["hidden_states"]
        tensors = [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise SurgeryError("a removed block (Skip) was called without a stream tensor "
                               "as its first argument or hidden_states")
        return tensors[0]


def remove_blocks(model: nn.Module, names: Iterable[str]) -> None:
    """Remove the blocks ``names`` (qualified module names) from ``model``, in place.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
        ...                   num_hidden_layers=3, num_attention_heads=2)
        >>> lm = LlamaForCausalLM(cfg)
        >>> remove_blocks(lm, ["model.layers.1"])
        >>> list(lm.model.layers._modules), lm.config.num_hidden_layers
        (['0', '2'], 2)
        >>> lm.model.layers[1].self_attn.layer_idx
        Traceback (most recent call last):
        ...
        KeyError: '1'
        >>> [layer.self_attn.layer_idx for layer in lm.model.layers]
        [0, 1]
    """
    names = list(names)
    modules = dict(model.named_modules())
    for name in names:
        if not name or name not in modules:
            raise SurgeryError(f"the plan removes block {name!r}, which the model does not "
                               f"have")
    lists: dict[str, list[str]] = {}
    for name in names:
        parent, _, key = name.rpartition(".")
        owner = modules[parent] if parent else model
        if _config_list(model, modules, parent) is not None:
            lists.setdefault(parent, []).append(key)
        else:
            owner.register_module(key, Skip())
    for parent, keys in lists.items():
        _drop_from_list(model, modules, parent, set(keys))


def _config_list(model: nn.Module, modules: dict[str, nn.Module], parent: str) -> Any:
    """The config whose ``num_hidden_layers`` counts the layer list ``parent``, or None."""
    container = modules.get(parent)
    if not parent or not isinstance(container, nn.ModuleList):
        return None
    grand = parent.rpartition(".")[0]
    for holder in (modules[grand] if grand else model, model):
        config = getattr(holder, "config", None)
        if getattr(config, "num_hidden_layers", None) == len(container):
            return config
    return None


def _drop_from_list(model: nn.Module, modules: dict[str, nn.Module], parent: str,
                    keys: set[str]) -> None:
    """Rebuild the layer list ``parent`` without ``keys``; renumber ``layer_idx`` and update
    the config's counts."""
    config = _config_list(model, modules, parent)
    old = modules[parent]
    kept = [(i, key, layer) for i, (key, layer) in enumerate(old.named_children())
            if key not in keys]
    new = nn.ModuleList()
    for position, (before, key, layer) in enumerate(kept):
        new.add_module(key, layer)
        for sub in layer.modules():
            if getattr(sub, "layer_idx", None) == before:
                sub.layer_idx = position
    grand, _, attr = parent.rpartition(".")
    (modules[grand] if grand else model).register_module(attr, new)
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and len(types) == len(old):
        config.layer_types = [types[i] for i, _, _ in kept]
    config.num_hidden_layers = len(kept)
