"""Models the toolkit knows by name, and how the CLI turns a MODEL argument into a model.

A MODEL argument is one of:
- ``lenet``: the seed's LeNet-5 for 28x28 MNIST (below);
- a torchvision classifier name such as ``resnet18`` (random init: weights come from ``--weights``);
- ``path/to/file.py:factory``: a Python file and a function in it that returns an ``nn.Module``.

Example:
    >>> model, shape = resolve_model("lenet")
    >>> shape
    (1, 1, 28, 28)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from surgery.errors import SurgeryError


class LeNet(nn.Module):
    """LeNet-5 for 28x28 single-channel input (no padding: 28 -> 24 -> 12 -> 8 -> 4).

    Layers conv1 (1->6, 5x5), conv2 (6->16, 5x5), fc1 (256->120), fc2 (120->84), fc3 (84->10);
    44,426 parameters.

    Example:
        >>> LeNet()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


DEFAULT_SHAPES = {"lenet": (1, 1, 28, 28)}
IMAGENET_SHAPE = (1, 3, 224, 224)


def resolve_model(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
    """Build the model a MODEL argument names; return it with its default input shape.

    Raises SurgeryError with a readable message for anything that does not name a model.
    """
    if spec == "lenet":
        return LeNet(), DEFAULT_SHAPES["lenet"]
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        return _from_file(spec), IMAGENET_SHAPE
    return _from_torchvision(spec), IMAGENET_SHAPE


def _from_torchvision(name: str) -> nn.Module:
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise SurgeryError(
            f"unknown model {name!r}: use 'lenet', a torchvision classifier name "
            f"(e.g. resnet18, mobilenet_v2) or 'path/to/file.py:factory'"
        )
    return torchvision.models.get_model(name, weights=None)


def _from_file(spec: str) -> nn.Module:
    path_text, factory_name = spec.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise SurgeryError(f"model file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(f"_user_model_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise SurgeryError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file may raise anything on import
        raise SurgeryError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise SurgeryError(f"{path} has no callable named {factory_name!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise SurgeryError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise SurgeryError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files raise many different types
        raise SurgeryError(f"cannot read weights {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise SurgeryError(f"{path} does not hold a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise SurgeryError(f"weights {path} do not fit the model: {exc}") from exc
