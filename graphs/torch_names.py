"""What a torch function mode is handed, in words: a tensor method's name, a property read.

Example:
    >>> import torch
    >>> method_name(torch.Tensor.view), property_name(torch.Tensor.shape.__get__)
    ('view', 'shape')
"""

from __future__ import annotations

import types
from typing import Any

import torch

_TENSOR_METHODS: dict[Any, str] = {}
for _name in dir(torch.Tensor):
    _attr = getattr(torch.Tensor, _name, None)
    if callable(_attr):
        _TENSOR_METHODS.setdefault(_attr, _name)


def method_name(func: Any) -> str | None:
    """The ``torch.Tensor`` attribute name of ``func`` when it is a tensor method, else None.

    Example:
        >>> method_name(torch.Tensor.view), method_name(torch.Tensor.__rsub__), method_name(len)
        ('view', '__rsub__', None)
    """
    try:
        return _TENSOR_METHODS.get(func)
    except TypeError:  # an unhashable callable
        return None


def property_name(func: Any) -> str | None:
    """``shape`` for ``Tensor.shape.__get__`` (how torch reports a property read), else None.

    Example:
        >>> property_name(torch.Tensor.shape.__get__), property_name(torch.relu)
        ('shape', None)
    """
    if isinstance(func, types.MethodWrapperType) and func.__name__ == "__get__":
        return getattr(func.__self__, "__name__", None)
    return None
