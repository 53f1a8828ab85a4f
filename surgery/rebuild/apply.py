"""Apply a plan: rebuild every layer it touches and swap the new layers in (the one place)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from surgery.layers import indexed_tensor
from surgery.plan.plan import Plan
from surgery.rebuild.surgeons import default_surgeons, rebuild


def apply_plan(model: nn.Module, plan: Plan) -> nn.Module:
    """Rebuild every layer the plan touches, in place on ``model``; returns ``model``.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> plan = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5).plan
        >>> apply_plan(LeNet(), plan).conv2
        Conv2d(3, 8, kernel_size=(5, 5), stride=(1, 1))
    """
    keep_by_module: dict[str, dict[int, torch.Tensor]] = {}
    for (name, dim), removed in plan.removed().items():
        size = indexed_tensor(model.get_submodule(name)).shape[dim]
        keep = np.delete(np.arange(size, dtype=np.int64), np.asarray(removed, dtype=np.int64))
        keep_by_module.setdefault(name, {})[dim] = torch.from_numpy(keep)
    surgeons = default_surgeons()
    for name, keep in keep_by_module.items():
        replace(model, name, rebuild(model.get_submodule(name), keep, surgeons))
    return model


def replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Swap the submodule at qualified ``name`` for ``new`` (the one place modules change)."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
