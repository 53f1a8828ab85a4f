"""Export a (pruned) model to ONNX or a ``torch.export`` program, with a dynamic batch dim.

``export_onnx`` writes an ``.onnx`` file checked by ``onnx.checker``; ``compare_onnx`` runs it
in onnxruntime against PyTorch. ``export_program`` writes a ``.pt2`` file that
``torch.export.load`` reads back. Saving and reloading the pruned weights themselves (safetensors
+ plan.json) is in ``surgery.io.saving``.

Example inputs are read as ``prune`` reads them (a tensor, a tuple/list of positional inputs, a
dict of keyword inputs such as ``{"input_ids": ids, "use_cache": False}``, any pytree below).
The ONNX file's inputs are the example's tensors, named ``input0``, ``input1``, ... for
positional inputs and by keyword for keyword inputs (``input_ids``); its outputs are the
model's output tensors, named ``output0``, ... or by key for a dict or a Hugging Face
``ModelOutput`` (``logits``); non-tensor outputs (a transformers ``Cache``, None) are left out
and non-tensor inputs (``use_cache=False``) are constants of the file
(``graphs.inputs.Positional``). ``export_program`` passes keyword inputs to ``torch.export``
as keyword inputs: the program's module is called like the model and returns what it returns.

Both export the model as it runs for inference (eval mode) and never change the user's model:
a model with a module in training mode is exported from a deep copy (``inference_model``), so
its training flags and BatchNorm running statistics stay as they were. Files are written by
``surgery.atomic.write_atomic`` (a temporary file, checked, then renamed into place).

Example:
    >>> import tempfile, torch
    >>> from surgery import prune
    >>> from surgery.io.models import LeNet
    >>> model = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5).model.eval()
    >>> path = export_onnx(model, torch.zeros(1, 1, 28, 28), Path(tempfile.mkdtemp()) / "m.onnx")
    >>> compare_onnx(path, model, torch.randn(5, 1, 28, 28)) <= 1e-4
    True
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphs.inputs import (
    Positional,
    call_model,
    input_leaves,
    output_leaves,
    plain_outputs,
    replace_leaves,
    split_inputs,
)
from graphs.modes import eval_mode
from surgery.atomic import write_atomic, write_file_atomic
from surgery.errors import SurgeryError

try:  # optional: the `export` extra (pip install onnx onnxruntime)
    import onnx
except ImportError:
    onnx = None
try:
    import onnxruntime
except ImportError:
    onnxruntime = None


@contextmanager
def inference_model(model: nn.Module) -> Iterator[nn.Module]:
    """The model to export, in eval mode for the block: an eval-mode deep copy when a module of
    ``model`` is in training mode (the user's flags and BatchNorm statistics are never touched,
    not even for the block), else ``model`` itself inside ``graphs.modes.eval_mode`` (torch's
    exporters flip flags while they run; eval_mode restores them, also when blocks overlap). A
    model that cannot be copied is used itself, in eval_mode.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
        >>> with inference_model(model) as net:
        ...     net is model, net.training, model.training
        (False, False, True)
    """
    net = model
    if any(m.training for m in model.modules()):
        try:
            net = copy.deepcopy(model)
        except (RuntimeError, TypeError, copy.Error):  # e.g. old-style weight_norm layers
            net = model
    with eval_mode(net):
        yield net


def export_onnx(model: nn.Module, example_inputs: Any, path: str | Path,
                opset: int = 17) -> Path:
    """Export to ONNX with a dynamic batch dim (dim 0 of every input/output); check the file.
    Inputs and outputs are named as the module docstring says.

    Example:
        >>> import tempfile, torch
        >>> from surgery.io.models import LeNet
        >>> p = export_onnx(LeNet().eval(), torch.zeros(1, 1, 28, 28),
        ...                 Path(tempfile.mkdtemp()) / "m.onnx")
        >>> p.stat().st_size > 0
        True
    """
    if onnx is None:
        raise SurgeryError("ONNX export needs the 'onnx' package: pip install onnx")
    inputs = input_leaves(example_inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with inference_model(model) as net:
        with torch.no_grad():
            outputs = output_leaves(call_model(net, example_inputs))
        if not inputs or not outputs:
            raise SurgeryError("ONNX export needs a tensor among the example inputs and the "
                               "model's outputs")
        wrapped = Positional(net, example_inputs)
        try:
            write_atomic(path, lambda tmp: _onnx_file(wrapped, inputs, outputs, tmp, opset))
        except Exception as exc:  # the exporter and checker raise many types
            raise SurgeryError(f"ONNX export failed: {type(exc).__name__}: {_first_line(exc)}"
                               f"{_hint(exc)}") from exc
    return path


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def _hint(exc: Exception) -> str:
    """What to do about a known failure of the TorchScript ONNX exporter, or ""."""
    if "'aten::diff'" in str(exc):  # transformers' packed-sequence check, without a mask
        return (" (a Hugging Face decoder runs torch.diff on its position ids when no "
                "attention_mask is given: pass one among the inputs)")
    return ""


def _onnx_file(model: nn.Module, inputs: list[tuple[str, torch.Tensor]],
               outputs: list[tuple[str, torch.Tensor]], path: Path, opset: int) -> None:
    """Export ``model`` (positional tensors in, a tuple of tensors out) to the ONNX file
    ``path``, batch dim dynamic, and check it."""
    batched = {name: {0: "batch"} for name, t in (*inputs, *outputs) if t.dim()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r"You are using the legacy TorchScript-based ONNX")
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r"The feature will be removed", module=r"torch\.onnx")
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, tuple(t for _, t in inputs), str(path), dynamo=False,
                          opset_version=opset, input_names=[n for n, _ in inputs],
                          output_names=[n for n, _ in outputs], dynamic_axes=batched)
    onnx.checker.check_model(str(path))


def export_program(model: nn.Module, example_inputs: Any, path: str | Path) -> Path:
    """``torch.export`` with a dynamic batch dim (dim 0 of every input tensor), saved as a
    ``.pt2`` file. Keyword inputs stay keyword inputs of the program, which returns what the
    model returns (a ``ModelOutput`` too); when that holds objects torch.export cannot return
    (a transformers ``Cache``: ``use_cache`` on), the program returns plain dicts and tuples
    without them (``graphs.inputs.plain_outputs``).

    A batch of 1 in the example is repeated to 2 (torch.export specializes size-1 dims).
    ``.pt2`` is torch's own archive format; to ship weights to people who must not trust the
    file, use ``surgery.io.saving.save`` (safetensors + plan.json) instead.

    Example:
        >>> import tempfile, torch
        >>> from surgery.io.models import LeNet
        >>> p = export_program(LeNet().eval(), torch.zeros(1, 1, 28, 28),
        ...                    Path(tempfile.mkdtemp()) / "m.pt2")
        >>> torch.export.load(p).module()(torch.zeros(3, 1, 28, 28)).shape
        torch.Size([3, 10])
    """
    doubled = replace_leaves(example_inputs, iter(
        [t.repeat(2, *[1] * (t.dim() - 1)) if t.dim() and t.shape[0] == 1 else t
         for _, t in input_leaves(example_inputs)]))
    args, kwargs = split_inputs(doubled)
    try:
        with inference_model(model) as net:
            with torch.no_grad():
                opaque = plain_outputs(net(*args, **kwargs))[1]
            if opaque:  # a copy, hooked: the user's model never is
                net = copy.deepcopy(net)
                net.register_forward_hook(_plain_hook)
            program = torch.export.export(net, args, kwargs,
                                          dynamic_shapes=_dynamic_shapes(net, args, kwargs))
    except Exception as exc:  # export raises many types for unsupported models
        raise SurgeryError(f"torch.export failed: {type(exc).__name__}: "
                           f"{_first_line(exc)}") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_file_atomic(path, lambda f: torch.export.save(program, f))


def _plain_hook(module: nn.Module, args: Any, outputs: Any) -> Any:
    """A forward hook returning ``graphs.inputs.plain_outputs`` of the outputs."""
    return plain_outputs(outputs)[0]


def _dynamic_shapes(net: nn.Module, args: tuple, kwargs: dict) -> Any:
    """torch.export's ``dynamic_shapes``, dim 0 of every tensor one "batch" dim: a tuple for
    positional inputs only, else a dict by the forward's parameter names (``*args`` a tuple,
    ``**kwargs`` a dict)."""
    batch = torch.export.Dim("batch", min=1)
    if not kwargs:
        return tuple(_batch_dims(a, batch) for a in args)
    bound = inspect.signature(net.forward).bind(*args, **kwargs).arguments
    return {name: _batch_dims(value, batch) for name, value in bound.items()}


def _batch_dims(tree: Any, batch: Any) -> Any:
    """``tree`` with each tensor of one dim or more as ``{0: batch}``, other leaves None."""
    if isinstance(tree, torch.Tensor):
        return {0: batch} if tree.dim() else None
    if isinstance(tree, Mapping):
        return {k: _batch_dims(v, batch) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        items = [_batch_dims(v, batch) for v in tree]
        return items if isinstance(tree, list) else tuple(items)
    return None


def compare_onnx(path: str | Path, model: nn.Module, example_inputs: Any) -> float:
    """Run an ONNX file in onnxruntime and PyTorch ``model`` (in eval mode) on the same inputs.

    Returns the largest relative error over all outputs: max |onnx - torch| / max |torch|.
    Outputs are matched by name (``export_onnx``'s naming).

    Example:
        >>> import tempfile, torch
        >>> from surgery.io.models import LeNet
        >>> model = LeNet().eval()
        >>> p = export_onnx(model, torch.zeros(1, 1, 28, 28), Path(tempfile.mkdtemp()) / "m.onnx")
        >>> compare_onnx(p, model, torch.randn(3, 1, 28, 28)) <= 1e-4
        True
    """
    if onnxruntime is None:
        raise SurgeryError("checking ONNX needs 'onnxruntime': pip install onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = session.run(names, onnx_feed(session, example_inputs))
    with inference_model(model) as net, torch.no_grad():
        want = dict(output_leaves(call_model(net, example_inputs)))
    missing = [n for n in names if n not in want]
    if missing:
        raise SurgeryError(f"{path} has outputs {missing} that the model does not return")
    errors = []
    for name, g in zip(names, got, strict=True):
        w = want[name].detach().cpu().float()
        if tuple(g.shape) != tuple(w.shape):
            raise SurgeryError(f"{path} gives {name} of shape {list(g.shape)}, "
                               f"PyTorch {list(w.shape)}")
        g = torch.from_numpy(g).float()
        errors.append(float((g - w).abs().max() / w.abs().max().clamp_min(1e-12)))
    return max(errors)


def onnx_feed(session: Any, example_inputs: Any) -> dict[str, Any]:
    """The onnxruntime feed (name -> numpy array) of ``session``'s inputs from
    ``example_inputs``, named as ``export_onnx`` names them; SurgeryError if one is missing.

    Example:
        >>> import tempfile, torch
        >>> p = export_onnx(nn.Linear(2, 3).eval(), {"input": torch.zeros(1, 2)},
        ...                 Path(tempfile.mkdtemp()) / "m.onnx")
        >>> s = onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        >>> {k: v.shape for k, v in onnx_feed(s, {"input": torch.zeros(4, 2)}).items()}
        {'input': (4, 2)}
    """
    given = dict(input_leaves(example_inputs))
    wanted = [i.name for i in session.get_inputs()]
    missing = [n for n in wanted if n not in given]
    if missing:
        raise SurgeryError(f"the ONNX file takes inputs {missing} that the example inputs "
                           f"do not hold (they hold {sorted(given)})")
    return {n: given[n].detach().cpu().numpy() for n in wanted}


__all__ = ["compare_onnx", "export_onnx", "export_program", "inference_model", "onnx_feed"]
