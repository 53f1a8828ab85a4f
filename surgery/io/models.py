"""Models the toolkit knows by name, and how the CLI turns a MODEL argument into a model.

A MODEL argument is one of:
- ``lenet``: the seed's LeNet-5 for 28x28 MNIST (below);
- a torchvision classifier name such as ``resnet18`` (random init: weights come from ``--weights``);
- ``timm:NAME``: a timm model such as ``timm:convnext_atto`` (random init), input shape from its
  pretrained config;
- ``path/to/file.py:factory``: a Python file and a function in it that returns an ``nn.Module``.

``num_classes`` (the CLI's ``--num-classes``) sizes the classifier of lenet, torchvision and
timm models, and is passed to a file factory as ``factory(num_classes=N)``.

Example:
    >>> model, shape = resolve_model("lenet")
    >>> shape
    (1, 1, 28, 28)
    >>> model, shape = resolve_model("resnet18", num_classes=10)
    >>> model.fc.out_features, shape
    (10, (1, 3, 224, 224))
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from surgery.errors import SurgeryError

try:  # optional: timm:NAME models
    import timm
except ImportError:
    timm = None


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


def resolve_model(spec: str, num_classes: int | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    """Build the model a MODEL argument names; return it with its default input shape.

    Raises SurgeryError with a readable message for anything that does not name a model.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or
                                    not isinstance(num_classes, int) or num_classes < 1):
        raise SurgeryError(f"--num-classes must be a positive integer, got {num_classes!r}")
    options = {} if num_classes is None else {"num_classes": num_classes}
    if spec == "lenet":
        return LeNet(**options), DEFAULT_SHAPES["lenet"]
    if spec.startswith("timm:"):
        return _from_timm(spec[len("timm:"):], options)
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        return _from_file(spec, options), IMAGENET_SHAPE
    return _from_torchvision(spec, options), IMAGENET_SHAPE


def _from_torchvision(name: str, options: dict) -> nn.Module:
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise SurgeryError(
            f"unknown model {name!r}: use 'lenet', a torchvision classifier name "
            f"(e.g. resnet18, mobilenet_v2), 'timm:NAME' or 'path/to/file.py:factory'"
        )
    return torchvision.models.get_model(name, weights=None, **options)


def _from_timm(name: str, options: dict) -> tuple[nn.Module, tuple[int, ...]]:
    if timm is None:
        raise SurgeryError(f"'timm:{name}' needs timm: pip install timm")
    if not timm.is_model(name):
        raise SurgeryError(f"unknown timm model {name!r}: see timm.list_models(), "
                           f"e.g. timm:convnext_atto or timm:resnet18")
    model = timm.create_model(name, pretrained=False, **options)
    size = getattr(model, "pretrained_cfg", {}).get("input_size", IMAGENET_SHAPE[1:])
    return model, (1, *size)


def _from_file(spec: str, options: dict) -> nn.Module:
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
    model = factory(**options)
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
