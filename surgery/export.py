"""Save a pruned model safely (safetensors + JSON, never pickle), reload it, export it.

A saved folder holds ``model.safetensors`` (the pruned state dict) and ``plan.json`` (the plan,
a format version, and the new tensor shapes of every module the plan changes). ``load`` rebuilds
the small architecture from the unpruned base model and the plan, checks every shape, then loads
the weights strictly. Anything wrong with the folder raises ``SurgeryError``.

Example:
    >>> import tempfile, torch
    >>> from surgery import prune
    >>> from surgery.zoo import LeNet
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
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgery.errors import SurgeryError
from surgery.plan import GroupPlan, MemberPlan, Plan
from surgery.prune import apply_plan

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
PLAN_FILE = "plan.json"


def save(result: Any, directory: str | Path, base: str | None = None) -> tuple[Path, Path]:
    """Write ``model.safetensors`` and ``plan.json`` for a ``PruneResult``; return both paths.

    ``base`` (optional) records the name of the unpruned model (``lenet``, ``resnet18``, ...) so
    that ``surgery export DIR`` can rebuild it without ``--base``.

    Example:
        >>> import tempfile, torch
        >>> from surgery import prune
        >>> from surgery.zoo import LeNet
        >>> result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
        >>> weights, plan = save(result, tempfile.mkdtemp())
        >>> json.loads(plan.read_text())["shapes"]["conv1"]["weight"]
        [3, 1, 5, 5]
    """
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    try:
        save_file(state, str(out / WEIGHTS_FILE))
    except RuntimeError as exc:  # e.g. tied weights that share memory
        raise SurgeryError(f"cannot save the model as safetensors: {exc}") from exc
    data = dict(result.plan.to_json())
    data["format_version"] = FORMAT_VERSION
    data["shapes"] = changed_shapes(result.model, result.plan)
    if base is not None:
        data["base"] = base
    (out / PLAN_FILE).write_text(json.dumps(data, indent=1))
    return out / WEIGHTS_FILE, out / PLAN_FILE


def changed_shapes(model: nn.Module, plan: Plan) -> dict[str, dict[str, list[int]]]:
    """Module name -> {tensor name: shape} for every module the plan changes.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.zoo import LeNet
        >>> result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
        >>> changed_shapes(result.model, result.plan)["fc3"]
        {'weight': [10, 42], 'bias': [10]}
    """
    names = sorted({name for name, _ in plan.removed()})
    return {name: {k: list(v.shape) for k, v in
                   model.get_submodule(name).state_dict().items()} for name in names}


def plan_from_json(data: Any) -> Plan:
    """Rebuild a ``Plan`` from ``Plan.to_json()`` output; malformed data raises SurgeryError.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.zoo import LeNet
        >>> plan = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5).plan
        >>> plan_from_json(plan.to_json()) == plan
        True
    """
    try:
        groups = [GroupPlan(int(g["group"]), int(g["channels"]),
                            _ints(g["removed_channels"]),
                            [MemberPlan(str(m["module"]), str(m["role"]), int(m["dim"]),
                                        _ints(m["kept"]), _ints(m["removed"]))
                             for m in g["members"]])
                  for g in data["groups"]]
        return Plan(float(data["ratio"]), str(data["importance"]), groups)
    except (KeyError, TypeError, ValueError) as exc:
        raise SurgeryError(f"{PLAN_FILE} is not a valid pruning plan "
                           f"({type(exc).__name__}: {exc})") from None


def _ints(values: Any) -> list[int]:
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise TypeError(f"expected a list of integers, got {str(values)[:60]}")
    return list(values)


def read_plan(directory: str | Path) -> tuple[Plan, dict]:
    """Read ``plan.json`` from a saved folder: the plan and the raw JSON object."""
    path = Path(directory) / PLAN_FILE
    if not path.is_file():
        raise SurgeryError(f"{path} not found: pass a folder written by `surgery prune --out`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SurgeryError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SurgeryError(f"{path} must hold a JSON object, got {type(data).__name__}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise SurgeryError(f"{path} has format_version {version!r}; this toolkit reads "
                           f"version {FORMAT_VERSION}")
    if not isinstance(data.get("shapes"), dict):
        raise SurgeryError(f"{path} has no 'shapes' table")
    return plan_from_json(data), data


def check_plan(plan: Plan, model: nn.Module) -> None:
    """Raise SurgeryError unless every module, dim and index in ``plan`` exists in ``model``."""
    for (name, dim), removed in plan.removed().items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise SurgeryError(f"the plan names module {name!r}, which is not in the base "
                               f"model: is --base the model that was pruned?") from None
        tensor = getattr(module, "weight", None)
        if not isinstance(tensor, torch.Tensor):
            tensor = getattr(module, "running_mean", None)
        if not isinstance(tensor, torch.Tensor) or not 0 <= dim < tensor.dim():
            raise SurgeryError(f"the plan prunes dim {dim} of {name!r} "
                               f"({type(module).__name__}), which has no such weight dim")
        size = tensor.shape[dim]
        bad = [i for i in removed if not 0 <= i < size]
        if bad:
            raise SurgeryError(f"the plan removes indices {bad[:5]} from dim {dim} of {name!r}, "
                               f"which has only {size}")
        if len(removed) >= size:
            raise SurgeryError(f"the plan removes all {size} indices of dim {dim} of {name!r}")


def load(directory: str | Path, base_model: nn.Module) -> nn.Module:
    """Rebuild the pruned model saved in ``directory`` from its unpruned ``base_model``.

    ``base_model`` is left untouched; the result has the saved weights. See the module example.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SurgeryError(f"{directory} is not a folder: pass one written by "
                           f"`surgery prune --out`")
    plan, data = read_plan(directory)
    check_plan(plan, base_model)
    model = copy.deepcopy(base_model)
    try:
        apply_plan(model, plan)
    except (RuntimeError, IndexError, ValueError) as exc:
        raise SurgeryError(f"the plan does not fit the base model: {exc}") from exc
    expected = changed_shapes(model, plan)
    if expected != data["shapes"]:
        raise SurgeryError(f"{PLAN_FILE} records shapes that differ from the plan applied to the "
                           f"base model: the file was edited or --base is a different model")
    state = _read_weights(directory / WEIGHTS_FILE)
    _check_shapes(state, model.state_dict(), directory / WEIGHTS_FILE)
    model.load_state_dict(state, strict=True)
    return model


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SurgeryError(f"{path} not found: pass a folder written by `surgery prune --out`")
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise SurgeryError(f"{path} is corrupt or truncated: {type(exc).__name__}: "
                           f"{exc}") from None


def _check_shapes(state: dict, expected: dict, path: Path) -> None:
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise SurgeryError(f"{path} does not match the pruned model: missing {missing[:5]}, "
                           f"unexpected {extra[:5]}")
    wrong = [f"{k}: file {list(state[k].shape)}, model {list(v.shape)}"
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise SurgeryError(f"{path} has tensors of the wrong shape (tampered file?): "
                           + "; ".join(wrong[:5]))


def _as_tuple(example_inputs: Any) -> tuple:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def export_onnx(model: nn.Module, example_inputs: Any, path: str | Path,
                opset: int = 17) -> Path:
    """Export to ONNX with a dynamic batch dim (dim 0 of every input/output); check the file.

    Example:
        >>> import tempfile, torch
        >>> from surgery.zoo import LeNet
        >>> p = export_onnx(LeNet().eval(), torch.zeros(1, 1, 28, 28),
        ...                 Path(tempfile.mkdtemp()) / "m.onnx")
        >>> p.stat().st_size > 0
        True
    """
    try:
        import onnx
    except ImportError:
        raise SurgeryError("ONNX export needs the 'onnx' package: pip install onnx") from None
    args = _as_tuple(example_inputs)
    with torch.no_grad():
        outputs = model(*args)
    n_out = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    inputs = [f"input{i}" for i in range(len(args))]
    outs = [f"output{i}" for i in range(n_out)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r"You are using the legacy TorchScript-based ONNX")
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r"The feature will be removed", module=r"torch\.onnx")
        try:
            torch.onnx.export(model, args, str(path), dynamo=False, opset_version=opset,
                              input_names=inputs, output_names=outs,
                              dynamic_axes={n: {0: "batch"} for n in inputs + outs})
            onnx.checker.check_model(str(path))
        except Exception as exc:  # the exporter and checker raise many types
            raise SurgeryError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    return path


def export_program(model: nn.Module, example_inputs: Any, path: str | Path) -> Path:
    """``torch.export`` with a dynamic batch dim, saved as a ``.pt2`` file.

    A batch of 1 in the example is repeated to 2 (torch.export specializes size-1 dims).

    Example:
        >>> import tempfile, torch
        >>> from surgery.zoo import LeNet
        >>> p = export_program(LeNet().eval(), torch.zeros(1, 1, 28, 28),
        ...                    Path(tempfile.mkdtemp()) / "m.pt2")
        >>> torch.export.load(p).module()(torch.zeros(3, 1, 28, 28)).shape
        torch.Size([3, 10])
    """
    args = tuple(a.repeat(2, *[1] * (a.dim() - 1)) if isinstance(a, torch.Tensor)
                 and a.dim() and a.shape[0] == 1 else a for a in _as_tuple(example_inputs))
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() else None
                    for a in args)
    try:
        program = torch.export.export(model, args, dynamic_shapes=dynamic)
    except Exception as exc:  # export raises many types for unsupported models
        raise SurgeryError(f"torch.export failed: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path


__all__ = ["save", "load", "plan_from_json", "read_plan", "check_plan", "changed_shapes",
           "export_onnx", "export_program", "FORMAT_VERSION"]
