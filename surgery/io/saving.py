"""Save a pruned model safely (safetensors + JSON, never pickle) and reload it.

A saved folder holds ``model.safetensors`` (the pruned state dict) and ``plan.json`` (the plan,
a format version, and the new tensor shapes of every module the plan changes). ``load`` rebuilds
the small architecture from the unpruned base model and the plan, checks every index, shape and
dtype, then loads the weights strictly. Neither file can run code when read: safetensors is a
JSON header plus raw bytes, and nothing here calls ``pickle`` or ``torch.load``. Anything wrong
with the folder raises ``SurgeryError`` naming the file and what does not fit.

Example:
    >>> import tempfile, torch
    >>> from surgery import prune
    >>> from surgery.io.models import LeNet
    >>> result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
    >>> folder = tempfile.mkdtemp()
    >>> _ = save(result, folder)
    >>> model = load(folder, LeNet())
    >>> x = torch.randn(2, 1, 28, 28)
    >>> torch.equal(model(x), result.model(x))
    True
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from graphs.datamodel import SIZE
from graphs.kinds import indexed_tensor
from surgery.atomic import write_atomic, write_text
from surgery.errors import SurgeryError
from surgery.io.safety import check_shape, read_json
from surgery.plan.plan import MemberPlan, Plan, plan_from_json
from surgery.rebuild.apply import apply_plan
from surgery.rebuild.lint import attribute_problems, lint

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
PLAN_FILE = "plan.json"


def save(result: Any, directory: str | Path, base: str | None = None,
         input_shape: Sequence[int] | None = None) -> tuple[Path, Path]:
    """Write ``model.safetensors`` and ``plan.json`` for a ``PruneResult``; return both paths.

    ``base`` (optional) records the name of the unpruned model (``lenet``, ``resnet18``, ...) and
    ``input_shape`` the example input shape, so that ``surgery export DIR`` needs neither flag.

    Example:
        >>> import tempfile, torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
        >>> weights, plan = save(result, tempfile.mkdtemp(), base="lenet")
        >>> json.loads(plan.read_text())["shapes"]["conv1"]["weight"]
        [3, 1, 5, 5]
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = own_memory({k: v.detach().cpu().contiguous()
                        for k, v in result.model.state_dict().items()})
    try:
        write_atomic(out / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    except RuntimeError as exc:  # e.g. tied weights that share memory
        raise SurgeryError(f"cannot save the model as safetensors: {exc}") from exc
    data = dict(result.plan.to_json())
    data["format_version"] = FORMAT_VERSION
    data["shapes"] = changed_shapes(result.model, result.plan)
    if base is not None:
        data["base"] = base
    if input_shape is not None:
        data["input_shape"] = [int(s) for s in input_shape]
    write_text(out / PLAN_FILE, json.dumps(data, indent=1))
    return out / WEIGHTS_FILE, out / PLAN_FILE


def own_memory(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with a copy of every tensor whose memory an earlier one uses (tied weights:
    safetensors refuses to write shared memory; ``load`` ties them again by applying the plan).

    Example:
        >>> w = torch.ones(2)
        >>> state = own_memory({"a": w, "b": w})
        >>> state["a"] is w, state["b"] is w, torch.equal(state["b"], w)
        (True, False, True)
    """
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if ptr and ptr in seen else tensor
        seen.add(ptr)
    return out


def changed_shapes(model: nn.Module, plan: Plan) -> dict[str, dict[str, list[int]]]:
    """Module name -> {tensor name: shape} for every module the plan changes.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
        >>> changed_shapes(result.model, result.plan)["fc3"]
        {'weight': [10, 42], 'bias': [10]}
    """
    names = sorted({name for name, _ in plan.removed()})
    shapes = {name: {k: list(v.shape) for k, v in
                     model.get_submodule(name).state_dict().items()} for name in names}
    for name, attr, _ in sorted(plan.removed_params()):
        tensor = model.get_submodule(name)._parameters[attr]
        shapes.setdefault(name, {})[attr] = list(tensor.shape)
    return shapes


def read_plan(directory: str | Path) -> tuple[Plan, dict]:
    """Read ``plan.json`` from a saved folder: the plan and the raw JSON object.

    Example:
        >>> import tempfile, torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> folder = tempfile.mkdtemp()
        >>> _ = save(prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5), folder, base="lenet")
        >>> plan, data = read_plan(folder)
        >>> data["base"], plan.ratio
        ('lenet', 0.5)
    """
    path = Path(directory) / PLAN_FILE
    if not path.is_file():
        raise SurgeryError(f"{path} not found: pass a folder written by `surgery prune --out`")
    data = read_json(path)
    if not isinstance(data, dict):
        raise SurgeryError(f"{path} must hold a JSON object, got {type(data).__name__}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise SurgeryError(f"{path} has format_version {version!r}; this toolkit reads "
                           f"version {FORMAT_VERSION}")
    if not isinstance(data.get("shapes"), dict):
        raise SurgeryError(f"{path} has no 'shapes' table")
    if "input_shape" in data:
        check_shape(data["input_shape"] if isinstance(data["input_shape"], list) else [None],
                    f"{path} input_shape")
    try:
        return plan_from_json(data), data
    except SurgeryError as exc:
        raise SurgeryError(f"{path}: {exc}") from None


def check_plan(plan: Plan, model: nn.Module) -> None:
    """Raise SurgeryError unless every module, dim and index in ``plan`` fits ``model``.

    Indices must lie in range, appear once per member, and no index may be both kept and
    removed on the same module dim.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> check_plan(prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5).plan, LeNet())
    """
    kept: dict[tuple[str, int], set[int]] = {}
    for g in plan.groups:
        for m in g.members:
            size = _member_size(model, m)
            for what, indices in (("removes", m.removed), ("keeps", m.kept)):
                bad = [i for i in indices if not 0 <= i < size]
                if bad:
                    raise SurgeryError(f"the plan {what} indices {bad[:5]} of dim {m.dim} of "
                                       f"{m.module!r}, which has only {size}")
                if len(set(indices)) != len(indices):
                    raise SurgeryError(f"the plan {what} an index of dim {m.dim} of "
                                       f"{m.module!r} twice (edited plan?)")
            if not m.attr:
                kept.setdefault((m.module, m.dim), set()).update(m.kept)
    for (name, dim), removed in plan.removed().items():
        size = _dim_size(model, name, dim)
        both = sorted(kept.get((name, dim), set()) & set(removed))
        if both:
            raise SurgeryError(f"the plan both keeps and removes indices {both[:5]} of dim "
                               f"{dim} of {name!r} (edited plan?)")
        if len(removed) >= size:
            raise SurgeryError(f"the plan removes all {size} indices of dim {dim} of {name!r}")


def _member_size(model: nn.Module, m: MemberPlan) -> int:
    """How many positions member ``m`` indexes in ``model``: its dim's size, or the value of the
    int attribute a SIZE member names (a plan may only name what the model already has)."""
    if not m.attr:
        return _dim_size(model, m.module, m.dim)
    module = _module(model, m.module)
    value = getattr(module, m.attr, None) if m.role == SIZE else module._parameters.get(m.attr)
    if m.role == SIZE and type(value) is int:
        return value
    if m.role == SIZE and isinstance(value, (tuple, list)) and 0 <= m.dim < len(value):
        return int(value[m.dim])
    if m.role != SIZE and isinstance(value, torch.Tensor) and 0 <= m.dim < value.dim():
        return value.shape[m.dim]
    raise SurgeryError(f"the plan names {m.attr!r} of {m.module!r} ({type(module).__name__}), "
                       f"which has no such {'int attribute' if m.role == SIZE else 'parameter dim'}")


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise SurgeryError(f"the plan names module {name!r}, which is not in the base "
                           f"model: is --base the model that was pruned?") from None


def _dim_size(model: nn.Module, name: str, dim: int) -> int:
    module = _module(model, name)
    tensor = indexed_tensor(module)
    if tensor is None or not 0 <= dim < tensor.dim():
        raise SurgeryError(f"the plan prunes dim {dim} of {name!r} "
                           f"({type(module).__name__}), which has no such weight dim")
    return tensor.shape[dim]


def load(directory: str | Path, base_model: nn.Module, example_inputs: Any = None) -> nn.Module:
    """Rebuild the pruned model saved in ``directory`` from its unpruned ``base_model``.

    ``base_model`` (a fresh instance of the original architecture) is left untouched; the result
    has the saved weights. ``surgery.rebuild.lint`` then runs the rebuilt model on
    ``example_inputs`` (default: zeros of the input shape plan.json records; convolutions by
    shape only) and any layer whose channel count does not fit raises SurgeryError. See the
    module example.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SurgeryError(f"{directory} is not a folder: pass one written by "
                           f"`surgery prune --out`")
    plan, data = read_plan(directory)
    check_plan(plan, base_model)
    try:
        model = copy.deepcopy(base_model)
    except RuntimeError as exc:  # e.g. old-style torch.nn.utils.weight_norm layers
        raise SurgeryError(f"cannot copy the base model: {str(exc).split('.')[0]}") from exc
    try:
        apply_plan(model, plan)
    except (RuntimeError, IndexError, ValueError) as exc:
        raise SurgeryError(f"the plan does not fit the base model: {exc}") from exc
    if changed_shapes(model, plan) != data["shapes"]:
        raise SurgeryError(f"{PLAN_FILE} records shapes that differ from the plan applied to the "
                           f"base model: the file was edited or --base is a different model")
    state = _read_weights(directory / WEIGHTS_FILE)
    _check_tensors(state, model.state_dict(), directory / WEIGHTS_FILE)
    model.load_state_dict(state, strict=True)
    if example_inputs is None and "input_shape" in data:
        example_inputs = torch.zeros(data["input_shape"])
    problems = lint(model, example_inputs) if example_inputs is not None else \
        attribute_problems(model)
    if problems:
        raise SurgeryError(f"{directory} rebuilds into inconsistent layers: "
                           + "; ".join(problems[:5]))
    return model


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SurgeryError(f"{path} not found: pass a folder written by `surgery prune --out`")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise SurgeryError(f"{path} is corrupt or truncated: {type(exc).__name__}: "
                           f"{exc}") from None


def _check_tensors(state: dict, expected: dict, path: Path) -> None:
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise SurgeryError(f"{path} does not match the pruned model: missing {missing[:5]}, "
                           f"unexpected {extra[:5]}")
    wrong = [f"{k}: file {list(state[k].shape)} {state[k].dtype}, model {list(v.shape)} "
             f"{v.dtype}" for k, v in expected.items()
             if state[k].shape != v.shape or state[k].dtype != v.dtype]
    if wrong:
        raise SurgeryError(f"{path} has tensors of the wrong shape or dtype (tampered file?): "
                           + "; ".join(wrong[:5]))


__all__ = ["FORMAT_VERSION", "PLAN_FILE", "WEIGHTS_FILE", "changed_shapes", "check_plan", "load",
           "read_plan", "save"]
