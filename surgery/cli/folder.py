"""A folder written by ``surgery prune`` on the command line: its base model and input shape.

``--base`` and ``--input-shape`` come from your own command line and are taken as given (a
``file.py:factory`` base runs that file, as ``surgery prune`` does). What plan.json records
instead is data from whoever wrote the folder, bounded before anything is built
(``surgery.io.bases``): a base from the built-in list, of bounded size, and an input shape
whose forward pass makes at most 2 GiB of tensors.

Example:
    >>> import tempfile, torch
    >>> from surgery import prune
    >>> from surgery.io.models import LeNet
    >>> from surgery.io.saving import read_plan_data, save
    >>> x, folder = torch.zeros(1, 1, 28, 28), tempfile.mkdtemp()
    >>> _ = save(prune(LeNet(), x, ratio=0.5), folder, base="lenet", input_shape=x.shape)
    >>> base = folder_base(folder, read_plan_data(folder))
    >>> base.name, base.shape
    ('lenet', (1, 1, 28, 28))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from surgery.cli.common import check_output, parse_shape
from surgery.errors import SurgeryError
from surgery.io.safety import check_shape

if TYPE_CHECKING:  # torch and the models are imported to run a command, not for --help
    from torch import nn


@dataclass(frozen=True)
class FolderBase:
    """The unpruned model a folder is rebuilt from (eval mode), and the input shape to use."""

    name: str
    model: nn.Module
    num_classes: int | None
    shape: tuple[int, ...]


def folder_base(directory: str, data: dict, base: str | None = None,
                input_shape: str | None = None) -> FolderBase:
    """The base model and input shape for a folder whose plan.json holds ``data``: ``base``
    and ``input_shape`` (the command line's; the base must run on that shape) when given,
    else the recorded ones, bounded."""
    import torch

    from surgery.io.bases import check_input_cost, resolve_builtin
    from surgery.io.models import resolve_model
    source = f"{directory}/plan.json"
    num_classes = recorded_num_classes(data)
    name = base or recorded_base(data, directory)
    model, default_shape = resolve_model(name, num_classes) if base else \
        resolve_builtin(name, source, num_classes)
    if input_shape:
        shape = parse_shape(input_shape)
        check_output(model.eval(), torch.zeros(shape), name)
    elif "input_shape" in data:
        shape = check_input_cost(model, recorded_shape(data, default_shape),
                                 f"{source} input_shape")
    else:
        shape = default_shape
    return FolderBase(name, model.eval(), num_classes, shape)


def recorded_num_classes(data: dict) -> int | None:
    """The ``num_classes`` plan.json records, if any (its range is checked when the model is
    built).

    Example:
        >>> recorded_num_classes({"num_classes": 10}), recorded_num_classes({})
        (10, None)
    """
    value = data.get("num_classes")
    return value if type(value) is int else None


def recorded_base(data: dict, directory: str) -> str:
    """The base model name recorded by ``surgery prune`` in DIR/plan.json.

    Example:
        >>> recorded_base({"base": "lenet"}, "out/lenet")
        'lenet'
    """
    name = data.get("base")
    if not isinstance(name, str):
        raise SurgeryError(f"{directory}/plan.json records no base model: pass --base MODEL")
    return name


def recorded_shape(data: dict, default: tuple[int, ...]) -> tuple[int, ...]:
    """The example input shape recorded in plan.json, else ``default``.

    Example:
        >>> recorded_shape({"input_shape": [1, 1, 28, 28]}, (1, 3, 224, 224))
        (1, 1, 28, 28)
    """
    shape = data.get("input_shape", list(default))
    return check_shape(shape if isinstance(shape, list) else [shape], "plan.json input_shape")


__all__ = ["FolderBase", "folder_base", "recorded_base", "recorded_num_classes",
           "recorded_shape"]
