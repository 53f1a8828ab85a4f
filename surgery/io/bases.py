"""What a saved folder may make this toolkit build and run: a base model from a fixed list, of
bounded size, on an input shape of bounded cost, each checked before anything is allocated.

A folder from someone else is data. The base model its plan.json names is built only if

- it is one of ``builtin_bases()``: ``lenet`` and torchvision's classifiers, never a
  ``file.py:factory`` (that would run the file) nor a YOLO ``.pt`` (a pickle: pass ``--base``
  yourself); or ``timm:NAME`` (one of ``timm.list_models()``, random init) or
  ``yolo:FILE.yaml`` (its layers checked: ``surgery.io.yolo.check_yolo_base``);
  or ``hf:DIR``, built from that folder's config only, as one of transformers' own classes
  (no weights read, no remote code: ``surgery.io.hf_load.hf_base``);
- its parameter count, known before it is built (counted on the meta device: shapes only,
  no memory) or, for the few that build only with real tensors (regnets), estimated
  (torchvision's weights metadata plus a head of ``num_classes x HEAD_WIDTH``), is at most
  ``MAX_BASE_PARAMS``.

An input shape read from a folder is used only when one forward pass at that shape, run on
the meta device (shapes only, no memory), produces at most ``MAX_ACTIVATION_BYTES`` of
tensors in all (``activation_bytes``): what a trace or an export may hold at once.

Example:
    >>> estimated_params("resnet18", num_classes=10) <= MAX_BASE_PARAMS
    True
    >>> model, shape = resolve_builtin("lenet", "plan.json")
    >>> check_input_cost(model, shape, "plan.json input_shape")
    (1, 1, 28, 28)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from surgery.errors import SurgeryError
from surgery.io.hf_load import PREFIX as HF_PREFIX
from surgery.io.hf_load import hf_base
from surgery.io.models import LeNet, class_options, is_file_spec, resolve_model
from surgery.io.safety import check_base_params
from surgery.io.timm_models import check_timm_base
from surgery.io.yolo import check_yolo_base

MAX_BASE_PARAMS = 1 << 28  # 268M parameters: 1 GiB of float32
MAX_ACTIVATION_BYTES = 1 << 31  # 2 GiB: every tensor one forward pass makes, summed
HEAD_WIDTH = 8192  # no built-in classifier's head has more inputs (regnet_y_128gf: 7392)
PREFIXED_BASES = {"timm:": check_timm_base, "yolo:": check_yolo_base}  # prefix -> its bounds


def builtin_bases() -> list[str]:
    """The model names a saved folder may record as its base.

    Example:
        >>> names = builtin_bases()
        >>> names[0], "resnet18" in names, len(names) > 50
        ('lenet', True, True)
    """
    return ["lenet", *torchvision.models.list_models(module=torchvision.models)]


def estimated_params(name: str, num_classes: int | None = None) -> int:
    """How many parameters the built-in base ``name`` has with ``num_classes`` outputs,
    without allocating it: counted on the meta device; for a model that builds only with real
    tensors, at most its count at its own classes (the largest over torchvision's published
    weights) plus ``num_classes x (HEAD_WIDTH + 1)``.

    Example:
        >>> estimated_params("lenet"), estimated_params("resnet18", 10)
        (44426, 11181642)
    """
    options = class_options(num_classes)
    try:
        with torch.device("meta"):
            model = LeNet(**options) if name == "lenet" else \
                torchvision.models.get_model(name, weights=None, **options)
        return sum(p.numel() for p in model.parameters())
    except (NotImplementedError, RuntimeError):  # widths computed with real tensors (regnets)
        own = max(w.meta["num_params"] for w in torchvision.models.get_model_weights(name))
        return own + (num_classes or 0) * (HEAD_WIDTH + 1)


def resolve_builtin(spec: Any, source: str,
                    num_classes: int | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    """Like ``resolve_model``, for a MODEL name read from a file (``source``): only a name of
    ``builtin_bases()`` whose ``estimated_params`` is at most ``MAX_BASE_PARAMS``; checked
    before the model is built.

    Example:
        >>> resolve_builtin("lenet", "plan.json")[1]
        (1, 1, 28, 28)
    """
    if isinstance(spec, str) and spec.startswith(HF_PREFIX):
        return hf_base(spec, source, MAX_BASE_PARAMS)
    check = next((c for p, c in PREFIXED_BASES.items()
                  if isinstance(spec, str) and spec.startswith(p)), None)
    if check is not None:  # timm:NAME, yolo:FILE.yaml: bounded before they are built
        check(spec, source, MAX_BASE_PARAMS, num_classes)
        return resolve_model(spec, num_classes)
    if not isinstance(spec, str) or spec not in builtin_bases():
        kind = " (a file: it would run)" if isinstance(spec, str) and is_file_spec(spec) else ""
        raise SurgeryError(f"{source} names base {str(spec)[:80]!r}, which is not a built-in "
                           f"model{kind}; a saved folder never runs code and names only lenet, "
                           f"a torchvision classifier, timm:NAME or yolo:FILE.yaml: if you "
                           f"trust it, pass --base yourself")
    params = estimated_params(spec, num_classes)
    check_base_params(spec, source, params, MAX_BASE_PARAMS,
                      f" with num_classes {num_classes} (up to)")
    return resolve_model(spec, num_classes)


def base_model_of(folder: str, data: dict, spec: str | None = None) -> nn.Module:
    """The unpruned model a saved folder is rebuilt from, in eval mode: the MODEL ``spec`` you
    name (taken as given: a ``file.py:factory`` runs, as on the command line), else the base
    its plan.json (read into ``data``) records, which must be built in (``resolve_builtin``).
    Either is built with the ``num_classes`` plan.json records.

    Example:
        >>> type(base_model_of("out/lenet", {"base": "lenet"})).__name__
        'LeNet'
    """
    classes = data.get("num_classes")
    classes = classes if type(classes) is int else None
    if spec is not None:
        return resolve_model(spec, classes)[0].eval()
    name = data.get("base")
    if not isinstance(name, str):
        raise SurgeryError(f"{folder}/plan.json records no base model: pass the unpruned model "
                           f"(or its MODEL name) as base_model")
    return resolve_builtin(name, f"{folder}/plan.json", classes)[0].eval()


class _Tally(TorchFunctionMode):
    """Counts the bytes of every tensor the torch calls under it return."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.bytes += _nbytes(out)
        return out


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def activation_bytes(model: nn.Module, shape: Sequence[int]) -> int:
    """Bytes of all tensors one eval-mode forward pass of ``model`` on float zeros of ``shape``
    returns, summed (views too: an upper estimate), run on a copy of ``model`` whose
    parameters and buffers are on the meta device: no memory is used and ``model`` is left as
    it was.

    Example:
        >>> from surgery.io.models import LeNet
        >>> activation_bytes(LeNet(), (1, 1, 28, 28)) > 28 * 28 * 4
        True
    """
    tally = _Tally()
    with torch.no_grad():
        copy = meta_copy(model).eval()
        with tally:
            copy(torch.zeros(tuple(shape), device="meta"))
    return tally.bytes


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are empty meta tensors of the same
    shapes (no data is copied; other attributes are copied as ``copy.deepcopy`` does).

    Example:
        >>> from surgery.io.models import LeNet
        >>> meta_copy(LeNet()).conv1.weight.device.type
        'meta'
    """
    memo: dict[int, Any] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) \
            if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def check_input_cost(model: nn.Module, shape: Sequence[int], what: str) -> tuple[int, ...]:
    """``shape`` (read from a saved folder, named ``what``) if one forward pass of ``model``
    at it makes at most ``MAX_ACTIVATION_BYTES`` of tensors; else SurgeryError. See the module
    example."""
    try:
        used = activation_bytes(model, shape)
    except Exception as exc:  # the model's forward may raise anything on meta tensors
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise SurgeryError(f"{what} {list(shape)} does not fit the base model, or its cost "
                           f"cannot be estimated ({type(exc).__name__}: {first}): is it the "
                           f"model that was pruned? Else pass the input shape yourself "
                           f"(--input-shape)") from exc
    if used > MAX_ACTIVATION_BYTES:
        raise SurgeryError(f"{what} {list(shape)} makes {used / 2**30:.1f} GiB of tensors in "
                           f"one forward pass; a saved folder may ask for at most "
                           f"{MAX_ACTIVATION_BYTES / 2**30:.0f} GiB: if you trust it, pass "
                           f"the input shape yourself (--input-shape)")
    return tuple(shape)


__all__ = ["HEAD_WIDTH", "MAX_ACTIVATION_BYTES", "MAX_BASE_PARAMS", "activation_bytes",
           "builtin_bases", "check_input_cost", "estimated_params", "meta_copy",
           "resolve_builtin"]
