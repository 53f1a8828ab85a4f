"""ultralytics YOLO models: the ``yolo:FILE`` MODEL, the bounds on a base a saved folder names,
and the export back to a checkpoint that ``ultralytics.YOLO(path)`` loads at its pruned widths.

``yolo:FILE`` is a checkpoint (``.pt``: a pickle, so it runs code when read, like a
``file.py:factory``; only ever read when you name it) or a model ``.yaml`` (a path, or a name
ultralytics ships such as ``yolov8n-seg.yaml``; built with random weights). Nothing is ever
downloaded: a file that is not there is an error. The model runs as ``YOLO.export`` runs it
(``prediction_outputs``): the head returns its decoded predictions only (detection and pose: one
tensor; segmentation: predictions and mask prototypes), so the neck's outputs are prunable and
every measure sees tensors, and C2f blocks split by their ``c`` attribute, so pruning updates
it; ``export_ultralytics`` turns that mode off again.

A saved folder's recorded base is data from whoever wrote it: ``yolo:FILE.yaml`` only
(``check_yaml_layers``: every layer an ultralytics or torch module, no activation but a
``nn.Class(literals)``, bounded repeats), its parameters counted on the meta device
(``yaml_params``); a ``.pt`` base is never read from a folder: pass ``--base`` yourself.

Example:
    >>> import tempfile, torch
    >>> from surgery import prune
    >>> from ultralytics import YOLO
    >>> model, shape = resolve_yolo("yolov8n.yaml")
    >>> shape
    (1, 3, 640, 640)
    >>> small = prune(model, torch.zeros(1, 3, 64, 64), ratio=0.5).model
    >>> path = export_ultralytics(small, tempfile.mkdtemp() + "/small.pt")
    >>> YOLO(path).model.parameters().__next__().shape   # the pruned first conv
    torch.Size([8, 3, 3, 3])
"""

from __future__ import annotations

import ast
import contextlib
import copy
import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from surgery.atomic import write_file_atomic
from surgery.errors import SurgeryError
from surgery.io.optional import optional_module
from surgery.io.safety import check_base_params

PREFIX = "yolo:"
IMAGE_SIZE = 640
MAX_YAML_BYTES = 1 << 20  # a model yaml read from a folder's base
MAX_LAYERS = 1000  # backbone + head entries of such a yaml
MAX_REPEATS = 64  # the n of one entry
REFUSED_LAYERS = frozenset({"TorchVision"})  # builds (and may download) another model
LAYER_PACKAGES = ("ultralytics.nn.modules", "torch.nn.modules", "torchvision.ops")
MODEL_CLASSES = {"detect": "DetectionModel", "segment": "SegmentationModel",
                 "pose": "PoseModel", "obb": "OBBModel"}


def resolve_yolo(path: str, num_classes: int | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    """The YOLO model ``path`` names (a ``.pt`` checkpoint or a model ``.yaml``) in export
    mode (``prediction_outputs``), eval mode, float32, with ``num_classes`` classes if given;
    and its input shape ``(1, channels, 640, 640)``. See the module example."""
    if optional_module("ultralytics.nn.tasks") is None:
        raise SurgeryError(f"'yolo:{path}' needs ultralytics: pip install ultralytics")
    if Path(path).suffix.lower() == ".pt":
        model = _from_checkpoint(path)
        if num_classes is not None:
            fit_classes(model, num_classes)
    elif Path(path).suffix.lower() in (".yaml", ".yml"):
        spec = yaml_spec(path)
        task = optional_module("ultralytics.nn.tasks").guess_model_task(spec)
        with _readable_errors(path):
            model = getattr(optional_module("ultralytics.nn.tasks"), MODEL_CLASSES.get(task, "DetectionModel"))(
                spec, nc=num_classes, verbose=False)
    else:
        raise SurgeryError(f"yolo:{path}: name a checkpoint (.pt) or a model .yaml, "
                           f"e.g. yolo:yolov8n.yaml")
    channels = model.yaml.get("channels", 3) if isinstance(model.yaml, dict) else 3
    return prediction_outputs(model.float().eval()), (1, channels, IMAGE_SIZE, IMAGE_SIZE)


def _from_checkpoint(path: str) -> nn.Module:
    if not Path(path).is_file():  # ultralytics would try to download a missing one
        raise SurgeryError(f"yolo:{path}: file not found (nothing is downloaded)")
    with _readable_errors(path):
        model, _ = optional_module("ultralytics.nn.tasks").load_checkpoint(path)
    return model


@contextlib.contextmanager
def _readable_errors(path: str) -> Iterator[None]:
    """Turns what ultralytics raises while reading or building ``path`` into a SurgeryError."""
    try:
        yield
    except SurgeryError:
        raise
    except Exception as exc:  # ultralytics and yaml raise many types on a bad file
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise SurgeryError(f"yolo:{path}: ultralytics cannot read it "
                           f"({type(exc).__name__}: {first})") from exc


def yaml_spec(path: str) -> dict:
    """The model dictionary of a model ``.yaml``: a file, or a name ultralytics ships
    (``yolov8n.yaml`` is its ``yolov8.yaml`` at scale n); its layers checked by
    ``check_yaml_layers``.

    Example:
        >>> spec = yaml_spec("yolov8n-pose.yaml")
        >>> spec["scale"], spec["kpt_shape"]
        ('n', [17, 3])
    """
    if optional_module("ultralytics.nn.tasks") is None:
        raise SurgeryError(f"'yolo:{path}' needs ultralytics: pip install ultralytics")
    if Path(path).is_file() and Path(path).stat().st_size > MAX_YAML_BYTES:
        raise SurgeryError(f"yolo:{path} is over {MAX_YAML_BYTES:,} bytes: not a model yaml")
    if "://" in path:
        raise SurgeryError(f"yolo:{path}: a local file or a name ultralytics ships "
                           f"(nothing is downloaded)")
    with _readable_errors(path):
        spec = optional_module("ultralytics.nn.tasks").yaml_model_load(path)
    check_yaml_layers(spec, f"yolo:{path}")
    return spec


def check_yaml_layers(spec: Any, source: str) -> None:
    """SurgeryError unless ``spec`` (a model yaml's dictionary) has at most ``MAX_LAYERS``
    entries ``[from, n, module, args]``, each module a torch or ultralytics layer class (not
    ``REFUSED_LAYERS``), n at most ``MAX_REPEATS``, and an ``activation`` (if any) of the form
    ``nn.Class(literals)``: what building it can do is build layers.

    Example:
        >>> check_yaml_layers({"backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": []}, "x")
        >>> check_yaml_layers({"backbone": [[-1, 1, "attempt_load_weights", ["a.pt"]]],
        ...                    "head": []}, "x.yaml")
        Traceback (most recent call last):
        surgery.errors.SurgeryError: x.yaml: layer 0 is 'attempt_load_weights', not a torch or \
ultralytics layer class
    """
    layers = (spec.get("backbone") or []) + (spec.get("head") or []) \
        if isinstance(spec, dict) else None
    if not isinstance(layers, list) or not layers or len(layers) > MAX_LAYERS:
        raise SurgeryError(f"{source}: not a model yaml (backbone and head: 1 to "
                           f"{MAX_LAYERS} layers)")
    for i, layer in enumerate(layers):
        if not isinstance(layer, list) or len(layer) != 4 or type(layer[1]) is not int \
                or not 0 < layer[1] <= MAX_REPEATS:
            raise SurgeryError(f"{source}: layer {i} is not [from, n <= {MAX_REPEATS}, "
                               f"module, args]")
        if not _is_layer_class(layer[2]):
            raise SurgeryError(f"{source}: layer {i} is {str(layer[2])[:60]!r}, not a torch "
                               f"or ultralytics layer class")
    act = spec.get("activation")
    if act is not None and not _is_activation(act):
        raise SurgeryError(f"{source}: activation {str(act)[:60]!r} is not nn.Class(literals)")


def _is_layer_class(name: Any) -> bool:
    if not isinstance(name, str) or name in REFUSED_LAYERS:
        return False
    if name.startswith("nn."):
        found = getattr(nn, name[3:], None)
    elif name.startswith("torchvision.ops."):
        found = getattr(torchvision.ops, name[16:], None)
    else:
        found = vars(optional_module("ultralytics.nn.tasks")).get(name)
    return isinstance(found, type) and issubclass(found, nn.Module) and \
        found.__module__.startswith(LAYER_PACKAGES)


def _is_activation(text: Any) -> bool:
    try:
        call = ast.parse(str(text).strip(), mode="eval").body
        for arg in (*call.args, *(k.value for k in call.keywords)):
            ast.literal_eval(arg)
    except (SyntaxError, ValueError, AttributeError, TypeError):
        return False
    name = ast.unparse(call.func) if isinstance(call, ast.Call) else ""
    return _is_layer_class(name.removeprefix("torch."))


def yaml_params(path: str, num_classes: int | None = None) -> int:
    """How many parameters the model of a ``.yaml`` has (with ``num_classes`` classes if
    given), counted on the meta device: nothing is allocated.

    Example:
        >>> yaml_params("yolov8n.yaml"), yaml_params("yolov8n-seg.yaml", num_classes=2)
        (3157200, 3264006)
    """
    spec = yaml_spec(path)
    if num_classes is not None:
        spec["nc"] = num_classes
    with _readable_errors(path), torch.device("meta"):
        layers, _ = optional_module("ultralytics.nn.tasks").parse_model(
            copy.deepcopy(spec), ch=spec.get("channels", 3), verbose=False)
    return sum(p.numel() for p in layers.parameters())


def check_yolo_base(spec: str, source: str, max_params: int,
                    num_classes: int | None = None) -> None:
    """SurgeryError unless ``spec`` (``yolo:FILE``, read from ``source``) may be built for a
    saved folder: a model ``.yaml`` (never a ``.pt``: a pickle runs code when read) whose
    layers pass ``check_yaml_layers`` and whose parameters are at most ``max_params``.

    Example:
        >>> check_yolo_base("yolo:yolov8n.yaml", "plan.json", max_params=1 << 28)
        >>> check_yolo_base("yolo:best.pt", "plan.json", max_params=1 << 28)
        Traceback (most recent call last):
        surgery.errors.SurgeryError: plan.json names base 'yolo:best.pt', which is not a \
built-in model (a checkpoint is a pickle: reading it runs code): if you trust the file, pass \
--base yolo:best.pt yourself
    """
    path = spec[len(PREFIX):]
    if Path(path).suffix.lower() not in (".yaml", ".yml"):
        raise SurgeryError(f"{source} names base {spec[:80]!r}, which is not a built-in "
                           f"model (a checkpoint is a pickle: reading it runs code): if you "
                           f"trust the file, pass --base {spec[:80]} yourself")
    params = yaml_params(path, num_classes)
    check_base_params(spec, source, params, max_params)


def prediction_outputs(model: nn.Module, on: bool = True) -> nn.Module:
    """``model`` run as ultralytics' exporter runs it (``on``) or as it trains and predicts;
    returned for chaining. On: the head in export mode (its decoded predictions only; its
    anchors made on every call, never compared with the cached input shape) and every layer with a ``forward_split`` (C2f and kin: ``split((self.c, self.c))`` in place of
    ``chunk(2)``) calling it, so that pruning updates the ``c`` that split reads.

    Example:
        >>> model, _ = resolve_yolo("yolov8n.yaml")
        >>> model.model[-1].export, model.model[2].forward == model.model[2].forward_split
        (True, True)
        >>> prediction_outputs(model, on=False).model[-1].export, "forward" in vars(model.model[2])
        (False, False)
    """
    for module in model.modules():
        if hasattr(module, "export") and hasattr(module, "stride"):  # a Detect head and kin
            module.export = module.dynamic = on  # dynamic: anchors made anew on every call
        if callable(getattr(module, "forward_split", None)):
            if on:
                module.forward = module.forward_split
            else:
                vars(module).pop("forward", None)
    return model


def fit_classes(model: nn.Module, num_classes: int) -> nn.Module:
    """``model`` with a class branch of ``num_classes`` outputs: the last conv of each class
    branch of its Detect head (and of Segment, Pose, OBB) is made anew at the width it has
    (pruned or not) when its class count differs; returned for chaining.

    Example:
        >>> model, _ = resolve_yolo("yolov8n.yaml")
        >>> fit_classes(model, 3).model[-1].cv3[0][-1].out_channels
        3
    """
    head = model.model[-1]
    if not hasattr(head, "cv3") or head.nc == num_classes:
        return model
    for name in ("cv3", "one2one_cv3"):
        for branch in getattr(head, name, None) or []:
            old = branch[-1]
            branch[-1] = nn.Conv2d(old.in_channels, num_classes, 1).to(old.weight.device)
    head.nc, head.no = num_classes, num_classes + head.reg_max * 4
    model.yaml["nc"] = model.nc = num_classes
    model.names = {i: str(i) for i in range(num_classes)}
    return model


def export_ultralytics(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` (an ultralytics model, pruned or not) as an ultralytics checkpoint that
    ``ultralytics.YOLO(path)`` loads as it is, at its own widths (float32, out of export mode,
    no optimizer; only torch and ultralytics classes are pickled); return ``path``. Training
    it keeps these widths only with ``surgery.recover.yolo.pruned_trainer``. See the module
    example."""
    tasks = optional_module("ultralytics.nn.tasks")
    if tasks is None or not isinstance(model, tasks.BaseModel):
        raise SurgeryError(f"the ultralytics export takes an ultralytics model "
                           f"(yolo:FILE), not {type(model).__name__}")
    model = prediction_outputs(copy.deepcopy(model).float().eval(), on=False)
    model.criterion = None
    for p in model.parameters():
        p.requires_grad_(False)
    version = optional_module("ultralytics").__version__
    checkpoint = {"date": datetime.datetime.now().isoformat(),
                  "version": version, "epoch": -1, "best_fitness": None,
                  "model": model, "ema": None, "updates": None, "optimizer": None,
                  "train_args": {"task": tasks.guess_model_task(model)}}
    return write_file_atomic(path, lambda f: torch.save(checkpoint, f))


__all__ = ["IMAGE_SIZE", "MAX_LAYERS", "MAX_REPEATS", "MAX_YAML_BYTES", "PREFIX",
           "check_yaml_layers", "check_yolo_base", "export_ultralytics", "fit_classes",
           "prediction_outputs", "resolve_yolo", "yaml_params", "yaml_spec"]
