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

from graphs.checks import RUN_FAILS
from surgery.atomic import write_atomic, write_text
from surgery.errors import SurgeryError
from surgery.io.bases import base_model_of, check_input_cost
from surgery.io.plan_checks import (
    JSON_VALUES_PER_ENTRY,
    check_plan,
    check_plan_size,
    plan_capacity,
)
from surgery.io.safety import MAX_JSON_VALUES, check_shape, read_json
from surgery.plan.plan import Plan, plan_from_json
from surgery.rebuild.apply import apply_plan
from surgery.rebuild.blocks import remove_blocks
from surgery.rebuild.lint import attribute_problems, lint

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
PLAN_FILE = "plan.json"
def save(result: Any, directory: str | Path, base: str | None = None,
         input_shape: Sequence[int] | None = None, *,
         overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``model.safetensors`` and ``plan.json`` for a ``PruneResult``; return both paths.

    ``base`` (optional) records the name of the unpruned model (``lenet``, ``resnet18``, ...) and
    ``input_shape`` the example input shape, so that ``surgery export DIR`` needs neither flag.
    ``directory`` is created if missing; one that exists must be empty (as the command line's
    ``--out``), unless ``overwrite=True`` (as ``--force``): then those two files are replaced
    and any others left alone.

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
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise SurgeryError(f"{out} is not empty: pass overwrite=True to replace {WEIGHTS_FILE} "
                           f"and {PLAN_FILE} there (other files stay)")
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
    data = read_plan_data(directory)
    return _plan(data, Path(directory) / PLAN_FILE), data


def read_plan_data(directory: str | Path, max_values: int = MAX_JSON_VALUES) -> dict:
    """The raw JSON object of a saved folder's ``plan.json`` (read with ``read_json``, at most
    ``max_values`` values), its format, ``shapes`` table and ``input_shape`` checked
    (``read_plan`` also builds the ``Plan``).

    Example:
        >>> import tempfile, torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> folder = tempfile.mkdtemp()
        >>> _ = save(prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5), folder, base="lenet")
        >>> read_plan_data(folder)["base"]
        'lenet'
    """
    path = Path(directory) / PLAN_FILE
    if not path.is_file():
        raise SurgeryError(f"{path} not found: pass a folder written by `surgery prune --out`")
    data = read_json(path, max_values)
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
    return data


def _plan(data: dict, path: Path) -> Plan:
    try:
        return plan_from_json(data)
    except SurgeryError as exc:
        raise SurgeryError(f"{path}: {exc}") from None


def load(directory: str | Path, base_model: nn.Module | str | None = None,
         example_inputs: Any = None) -> nn.Module:
    """Rebuild the pruned model saved in ``directory`` from its unpruned ``base_model``.

    ``base_model`` (a fresh instance of the original architecture) is left untouched; the result
    has the saved weights. It may be a MODEL name instead (``"resnet18"``, ``"timm:NAME"``,
    ``"hf:DIR"``), or None for the base plan.json records, which must be a built-in one: a
    folder never makes code run (``surgery.io.bases.base_model_of``). ``surgery.rebuild.lint``
    then runs the rebuilt model on ``example_inputs`` (default: zeros of the input shape
    plan.json records, if one forward of the base at it makes at most 2 GiB of tensors, see
    ``surgery.io.bases``; convolutions by shape only) and any layer whose channel count does
    not fit raises SurgeryError. The plan's size is bounded by the base model's before it is
    parsed (``surgery.io.plan_checks``). See the module example.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SurgeryError(f"{directory} is not a folder: pass one written by "
                           f"`surgery prune --out`")
    if not isinstance(base_model, nn.Module):  # a MODEL name, or the base plan.json records
        base_model = base_model_of(str(directory), read_plan_data(directory), base_model)
    data = read_plan_data(directory, JSON_VALUES_PER_ENTRY * plan_capacity(base_model))
    check_plan_size(data, base_model, directory / PLAN_FILE)
    plan = _plan(data, directory / PLAN_FILE)
    check_plan(plan, base_model)
    try:
        model = copy.deepcopy(base_model)
    except RuntimeError as exc:  # e.g. old-style torch.nn.utils.weight_norm layers
        raise SurgeryError(f"cannot copy the base model: {str(exc).split('.')[0]}") from exc
    example_inputs = _lint_inputs(data, base_model, example_inputs)
    try:
        apply_plan(model, plan)
        remove_blocks(model, plan.removed_blocks)  # whole residual blocks, by name
    except (RuntimeError, IndexError, ValueError) as exc:
        raise SurgeryError(f"the plan does not fit the base model: {exc}") from exc
    if changed_shapes(model, plan) != data["shapes"]:
        raise SurgeryError(f"{PLAN_FILE} records shapes that differ from the plan applied to the "
                           f"base model: the file was edited or the base model is not the one pruned")
    state = _read_weights(directory / WEIGHTS_FILE, model.state_dict())
    _check_tensors(state, model.state_dict(), directory / WEIGHTS_FILE)
    model.load_state_dict(state, strict=True)
    problems = lint(model, example_inputs) if example_inputs is not None else \
        attribute_problems(model)
    if problems and problems[0].startswith(RUN_FAILS):  # the inputs, not the layers
        raise SurgeryError(f"{directory}: the rebuilt model does not run on the example "
                           f"inputs: {problems[0].removeprefix(RUN_FAILS)}")
    if problems:
        raise SurgeryError(f"{directory} rebuilds into inconsistent layers: "
                           + "; ".join(problems[:5]))
    return model


def _lint_inputs(data: dict, base_model: nn.Module, example_inputs: Any) -> Any:
    """``example_inputs``, else zeros of the recorded input shape (its cost checked by
    ``check_input_cost`` before they are allocated), else None."""
    if example_inputs is not None or "input_shape" not in data:
        return example_inputs
    return torch.zeros(check_input_cost(base_model, data["input_shape"],
                                        f"{PLAN_FILE} input_shape"))


def _read_weights(path: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of ``path``, read only if the file is no larger than ``expected``'s bytes
    and a header naming them (a bigger file holds something else)."""
    if not path.is_file():
        raise SurgeryError(f"{path} not found: pass a folder written by `surgery prune --out`")
    room = sum(t.numel() * t.element_size() + 256 + len(k) for k, t in expected.items())
    if path.stat().st_size > room + (64 << 10):
        raise SurgeryError(f"{path} is {path.stat().st_size:,} bytes, more than the rebuilt "
                           f"model's tensors need ({room:,}): not this model's weights")
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
           "own_memory", "read_plan", "save"]
