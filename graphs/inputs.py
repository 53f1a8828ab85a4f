"""One way to read example inputs: a tensor, a tuple/list of positional inputs, or a dict of
keyword inputs (any pytree of tensors below that: token ids, masks, nested lists).

Tools that take positional tensors only (fvcore's JIT tracer, the TorchScript ONNX exporter)
call a model through ``Positional``: its ``forward`` takes the example's tensor leaves as
positional arguments, puts them back into the example's structure (every other leaf, such as
``use_cache=False`` or None, is a constant of the wrapper), calls the model as ``call_model``
does and returns the model's output as a flat tuple of tensors (``output_leaves``).

Example:
    >>> import torch
    >>> args, kwargs = split_inputs({"input_ids": torch.zeros(1, 4, dtype=torch.long)})
    >>> args, sorted(kwargs)
    ((), ['input_ids'])
    >>> split_inputs([torch.zeros(1), torch.ones(1)])[0][1]
    tensor([1.])
    >>> [name for name, _ in input_leaves({"input_ids": torch.zeros(1, 4), "use_cache": False})]
    ['input_ids']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn


def split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    """(positional args, keyword args) for calling a model on ``example_inputs``.

    A dict (any mapping, e.g. a tokenizer's ``BatchEncoding``) is keyword arguments, a tuple
    or list is positional arguments, anything else (a tensor) is the single positional argument.
    """
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def call_model(model: nn.Module, example_inputs: Any) -> Any:
    """``model`` called on ``example_inputs`` read as ``split_inputs`` reads them."""
    args, kwargs = split_inputs(example_inputs)
    return model(*args, **kwargs)


def tensor_leaves(tree: Any, name: str) -> list[tuple[str, torch.Tensor]]:
    """(dotted path, tensor) of every tensor in ``tree``, depth first: a mapping (a dict, a
    Hugging Face ``ModelOutput``) by key, a tuple or list by position. Anything else (None,
    numbers, a transformers ``Cache`` object) holds no leaf.

    Example:
        >>> tree = {"logits": torch.zeros(1), "cache": object(), "hidden": (torch.ones(1),)}
        >>> [n for n, _ in tensor_leaves(tree, "out")]
        ['out.logits', 'out.hidden.0']
    """
    if isinstance(tree, torch.Tensor):
        return [(name, tree)]
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (tuple, list)):
        items = enumerate(tree)
    else:
        return []
    return [leaf for key, value in items for leaf in tensor_leaves(value, f"{name}.{key}")]


def replace_leaves(tree: Any, tensors: Iterator[torch.Tensor]) -> Any:
    """``tree`` with its tensors replaced, in ``tensor_leaves`` order, by the next of
    ``tensors``; containers keep their type (a namedtuple too), other leaves are kept.

    Example:
        >>> replace_leaves({"a": torch.zeros(1), "b": [1, torch.zeros(1)]},
        ...                iter([torch.ones(1), torch.full((1,), 2.0)]))
        {'a': tensor([1.]), 'b': [1, tensor([2.])]}
    """
    if isinstance(tree, torch.Tensor):
        return next(tensors)
    if isinstance(tree, Mapping):
        return type(tree)({k: replace_leaves(v, tensors) for k, v in tree.items()})
    if isinstance(tree, (tuple, list)):
        items = [replace_leaves(v, tensors) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return tree


def input_leaves(example_inputs: Any) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of the example's tensors: positional input i is ``input{i}``, a keyword
    input is its keyword, nested tensors add ``.key`` / ``.position``.

    Example:
        >>> x = (torch.zeros(1), [torch.zeros(1), torch.zeros(1)])
        >>> [n for n, _ in input_leaves(x)]
        ['input0', 'input1.0', 'input1.1']
    """
    args, kwargs = split_inputs(example_inputs)
    named = [(f"input{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    return [leaf for name, value in named for leaf in tensor_leaves(value, name)]


def output_leaves(outputs: Any) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of a model's outputs: a tensor is ``output0``, item i of a tuple or list
    ``output{i}``, a mapping's (``ModelOutput``'s) entries their keys; non-tensor outputs
    (None, a ``Cache``) are dropped.

    Example:
        >>> [n for n, _ in output_leaves({"logits": torch.zeros(1), "cache": None})]
        ['logits']
        >>> [n for n, _ in output_leaves((torch.zeros(1), [torch.zeros(1)]))]
        ['output0', 'output1.0']
    """
    if isinstance(outputs, Mapping):
        return [leaf for key, value in outputs.items() for leaf in tensor_leaves(value, key)]
    if isinstance(outputs, (tuple, list)):
        return [leaf for i, value in enumerate(outputs)
                for leaf in tensor_leaves(value, f"output{i}")]
    return tensor_leaves(outputs, "output0")


def plain_outputs(tree: Any) -> tuple[Any, bool]:
    """(``tree`` with every object that is not a tensor, container, number, string or None
    left out, whether one was): a mapping (a ``ModelOutput``) becomes a dict without those
    entries, a tuple or list holds None in their place. What ``torch.export`` can return when
    a model returns a transformers ``Cache``.

    Example:
        >>> plain_outputs({"logits": 1.0, "cache": object(), "more": (object(), 2)})
        ({'logits': 1.0, 'more': (None, 2)}, True)
        >>> plain_outputs((torch.zeros(1), None))
        ((tensor([0.]), None), False)
    """
    if isinstance(tree, (torch.Tensor, bool, int, float, str, type(None))):
        return tree, False
    if isinstance(tree, Mapping):
        pairs = {k: plain_outputs(v) for k, v in tree.items()}
        kept = {k: v for k, (v, _) in pairs.items()
                if not (v is None and tree[k] is not None)}
        return kept, any(dropped for _, dropped in pairs.values())
    if isinstance(tree, (tuple, list)):
        pairs = [plain_outputs(v) for v in tree]
        items = [v for v, _ in pairs]
        return (items if isinstance(tree, list) else tuple(items),
                any(dropped for _, dropped in pairs))
    return None, True


class Positional(nn.Module):
    """``model`` called on ``example_inputs``' structure with new tensors, taken positionally,
    returning its output tensors as a flat tuple: what positional-only tracers and exporters
    can follow. The model is the submodule ``model``, so its modules are named ``model.<name>``.

    Example:
        >>> net = Positional(nn.Linear(2, 3), {"input": torch.zeros(1, 2)})
        >>> [tuple(t.shape) for t in net(torch.zeros(4, 2))]
        [(4, 3)]
    """

    def __init__(self, model: nn.Module, example_inputs: Any) -> None:
        super().__init__()
        self.model = model
        self.example_inputs = example_inputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = call_model(self.model, replace_leaves(self.example_inputs, iter(tensors)))
        return tuple(t for _, t in output_leaves(outputs))
