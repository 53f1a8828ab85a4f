"""One way to read example inputs: a tensor, a tuple/list of positional inputs, or a dict of
keyword inputs (any pytree of tensors below that: token ids, masks, nested lists).

Example:
    >>> import torch
    >>> args, kwargs = split_inputs({"input_ids": torch.zeros(1, 4, dtype=torch.long)})
    >>> args, sorted(kwargs)
    ((), ['input_ids'])
    >>> split_inputs([torch.zeros(1), torch.ones(1)])[0][1]
    tensor([1.])
"""

from __future__ import annotations

from typing import Any

from torch import nn


def split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    """(positional args, keyword args) for calling a model on ``example_inputs``.

    A dict is keyword arguments, a tuple or list is positional arguments, anything else (a
    tensor) is the single positional argument.
    """
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def call_model(model: nn.Module, example_inputs: Any) -> Any:
    """``model`` called on ``example_inputs`` read as ``split_inputs`` reads them."""
    args, kwargs = split_inputs(example_inputs)
    return model(*args, **kwargs)
