"""Copy a model before surgery, with what deepcopy cannot copy on its own.

Example:
    >>> model = nn.Sequential(nn.Linear(2, 3))
    >>> copy_model(model)[0] is model[0]
    False
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from surgery.errors import SurgeryError


def copy_model(model: nn.Module, share: dict[int, object] | None = None) -> nn.Module:
    """A deep copy of ``model``; a tensor a module keeps that autograd computed (the old
    ``torch.nn.utils.weight_norm``'s ``weight``, recomputed before every forward) is copied
    detached, as deepcopy refuses it. ``share``: id -> what the copy holds in place of that
    object (a deepcopy memo; ``surgery.rebuild.apply.applied_copy``).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     layer = nn.utils.weight_norm(nn.Linear(2, 3))
        >>> copy_model(layer).weight.grad_fn is None
        True
    """
    memo = {id(t): t.detach().clone() for m in model.modules() for t in m.__dict__.values()
            if isinstance(t, torch.Tensor) and t.grad_fn is not None}
    memo.update(share or {})
    return copy.deepcopy(model, memo)


def copy_or_explain(model: nn.Module, share: dict[int, object] | None = None) -> nn.Module:
    """``copy_model``, or a SurgeryError saying what to do when the model cannot be copied.

    Example:
        >>> copy_or_explain(nn.Linear(2, 3)).out_features
        3
    """
    try:
        return copy_model(model, share)
    except RuntimeError as exc:  # e.g. old-style torch.nn.utils.weight_norm layers
        raise SurgeryError(f"cannot copy the model ({str(exc).split('.')[0]}): replace "
                           f"torch.nn.utils.weight_norm by torch.nn.utils.parametrizations."
                           f"weight_norm, or pass inplace=True") from exc
