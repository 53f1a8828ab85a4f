"""Models the toolkit knows by name, and how the CLI turns a MODEL argument into a model.

A MODEL argument is one of:
- ``lenet``: the seed's LeNet-5 for 28x28 MNIST (below);
- a torchvision classifier name such as ``resnet18`` (random init: weights come from ``--weights``);
- ``timm:NAME``: a timm model such as ``timm:convnext_atto`` (random init), input shape from its
  pretrained config;
- ``path/to/file.py:factory``: a Python file and a function in it that returns an ``nn.Module``;
- ``hf:DIR``: a transformers model saved by ``save_pretrained`` in a local folder (its weights;
  no download, no remote code: ``surgery.io.hf_load``).
- ``yolo:FILE``: an ultralytics YOLO checkpoint (``.pt``) or model ``.yaml`` (``surgery.io.yolo``).

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
import pickle
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from surgery.errors import SurgeryError
from surgery.io.hf_load import PREFIX as HF_PREFIX
from surgery.io.hf_load import load_hf
from surgery.io.optional import optional_module
from surgery.io.yolo import resolve_yolo


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


MAX_CLASSES = 100_000  # a bound on a class count read from a file (a Linear of that many rows)


def resolve_model(spec: str, num_classes: int | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    """Build the model a MODEL argument names; return it with its default input shape.

    Raises SurgeryError with a readable message for anything that does not name a model.
    """
    options = class_options(num_classes)
    if spec == "lenet":
        return LeNet(**options), DEFAULT_SHAPES["lenet"]
    if spec.startswith(HF_PREFIX):
        model, shape = load_hf(spec)
    elif spec.startswith("timm:"):
        model, shape = _from_timm(spec[len("timm:"):], options)
    elif spec.startswith("yolo:"):
        model, shape = resolve_yolo(spec[len("yolo:"):], num_classes)
    elif is_file_spec(spec):
        model, shape = _from_file(spec, options), IMAGENET_SHAPE
    else:
        model, shape = _from_torchvision(spec, options), IMAGENET_SHAPE
    return check_has_data(model, spec), shape


def class_options(num_classes: int | None) -> dict[str, int]:
    """``{"num_classes": N}`` for a model factory (empty for None); SurgeryError unless N is
    an integer from 1 to ``MAX_CLASSES``.

    Example:
        >>> class_options(10), class_options(None)
        ({'num_classes': 10}, {})
    """
    if num_classes is None:
        return {}
    if type(num_classes) is not int or not 1 <= num_classes <= MAX_CLASSES:
        raise SurgeryError(f"--num-classes must be an integer from 1 to {MAX_CLASSES:,}, got "
                           f"{str(num_classes)[:40]}")
    return {"num_classes": num_classes}


def check_has_data(model: nn.Module, name: str) -> nn.Module:
    """``model`` unless a parameter or buffer is on the meta device (shapes without data: its
    channels cannot be ranked, measured or saved); then SurgeryError.

    Example:
        >>> check_has_data(LeNet(), "lenet").fc3.out_features
        10
    """
    meta = next((k for k, v in (*model.named_parameters(), *model.named_buffers())
                 if v.is_meta), None)
    if meta is not None:
        raise SurgeryError(f"{name}: {meta} is on the meta device (a shape without data): "
                           f"build the model with real tensors (or load its weights first)")
    return model


def _from_torchvision(name: str, options: dict) -> nn.Module:
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise SurgeryError(
            f"unknown model {name!r}: use 'lenet', a torchvision classifier name "
            f"(e.g. resnet18, mobilenet_v2), 'timm:NAME' or 'path/to/file.py:factory'"
        )
    return torchvision.models.get_model(name, weights=None, **options)


def _from_timm(name: str, options: dict) -> tuple[nn.Module, tuple[int, ...]]:
    timm = optional_module("timm")
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
    try:
        model = factory(**options)
    except Exception as exc:  # the user's factory may raise anything (or need arguments)
        called = ", ".join(f"{k}={v}" for k, v in options.items()) or "no arguments"
        raise SurgeryError(f"{spec}() failed: {type(exc).__name__}: {exc} (the factory is "
                           f"called with {called})") from exc
    if not isinstance(model, nn.Module):
        raise SurgeryError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return model


def is_file_spec(spec: str) -> bool:
    """Whether a MODEL argument names a Python file (``path/to/file.py:factory``).

    Example:
        >>> is_file_spec("net.py:build"), is_file_spec("resnet18")
        (True, False)
    """
    return ":" in spec and spec.split(":", 1)[0].endswith(".py")


CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``).

    A checkpoint dict (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped and a
    ``module.`` prefix (DataParallel/DDP) removed; anything else raises SurgeryError in one line.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in
        ...             LeNet().state_dict().items()}}, path)
        >>> load_weights(LeNet(), path)
    """
    path = Path(path)
    if not path.is_file():
        raise SurgeryError(f"weights file not found: {path}")
    state = _state_dict(_read_state(path), path)
    expected = model.state_dict()
    wrong = [k for k, v in expected.items()
             if k not in state or tuple(state[k].shape) != tuple(v.shape)]
    extra = [k for k in state if k not in expected]
    if wrong or extra:
        first = wrong[0] if wrong else extra[0]
        detail = f"first missing: {first}" if wrong and first not in state else \
            f"first unexpected: {first}" if not wrong else \
            f"first mismatch: {first} is {list(state[first].shape)} in the file, " \
            f"{list(expected[first].shape)} in the model"
        raise SurgeryError(f"weights {path} do not fit the model: "
                           f"{len(expected) - len(wrong)} of {len(expected)} keys match; {detail}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise SurgeryError(f"weights {path} do not fit the model: "
                           f"{str(exc).splitlines()[0]}") from exc


def _read_state(path: Path) -> object:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # garbage, not a refused Python object
            raise SurgeryError(f"cannot read weights {path}: not a safetensors or torch.save "
                               f"state dict (corrupt file)") from None
        raise SurgeryError(f"{path} holds pickled Python objects (a whole model?), not only "
                           f"tensors; save model.state_dict() instead") from None
    except Exception as exc:  # corrupt files raise many different types
        raise SurgeryError(f"cannot read weights {path}: not a safetensors or torch.save state "
                           f"dict ({type(exc).__name__})") from exc


def _state_dict(data: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict or a checkpoint dict that holds one, ``module.`` removed."""
    for _ in range(3):  # {"model": {"state_dict": ...}} at most
        if not isinstance(data, dict):
            break
        inner = next((data[k] for k in CHECKPOINT_KEYS if isinstance(data.get(k), dict)), None)
        if inner is None or all(isinstance(v, torch.Tensor) for v in data.values()):
            break
        data = inner
    if not isinstance(data, dict) or not data or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise SurgeryError(f"{path} does not hold a state dict (names -> tensors)")
    if all(k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}
    return data
