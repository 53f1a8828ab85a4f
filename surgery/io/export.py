"""Export a (pruned) model to ONNX or a ``torch.export`` program, with a dynamic batch dim.

``export_onnx`` writes an ``.onnx`` file checked by ``onnx.checker``; ``compare_onnx`` runs it
in onnxruntime against PyTorch. ``export_program`` writes a ``.pt2`` file that
``torch.export.load`` reads back. Saving and reloading the pruned weights themselves (safetensors
+ plan.json) is in ``surgery.io.saving``.

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
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphs.inputs import split_inputs
from graphs.modes import eval_mode
from surgery.atomic import write_atomic
from surgery.errors import SurgeryError

try:  # optional: the `export` extra (pip install onnx onnxruntime)
    import onnx
except ImportError:
    onnx = None
try:
    import onnxruntime
except ImportError:
    onnxruntime = None


def positional(example_inputs: Any, what: str) -> tuple:
    """The positional inputs of ``example_inputs`` (``graphs.inputs.split_inputs``); keyword
    inputs raise SurgeryError, since ``what`` takes positional inputs only."""
    args, kwargs = split_inputs(example_inputs)
    if kwargs:
        raise SurgeryError(f"{what} takes positional example inputs (a tensor, tuple or list), "
                           f"not keyword inputs {sorted(kwargs)}")
    return args


@contextmanager
def inference_model(model: nn.Module) -> Iterator[nn.Module]:
    """The model to export, in eval mode for the block: an eval-mode deep copy when a module of
    ``model`` is in training mode (the user's flags and BatchNorm statistics are never touched,
    not even for the block), else ``model`` itself inside ``graphs.capture.eval_mode`` (torch's
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
    args = positional(example_inputs, "ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with inference_model(model) as net:
        with torch.no_grad():
            outputs = net(*args)
        n_out = len(outputs) if isinstance(outputs, (tuple, list)) else 1
        names = ([f"input{i}" for i in range(len(args))], [f"output{i}" for i in range(n_out)])
        try:
            write_atomic(path, lambda tmp: _onnx_file(net, args, tmp, opset, names))
        except Exception as exc:  # the exporter and checker raise many types
            raise SurgeryError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    return path


def _onnx_file(model: nn.Module, args: tuple, path: Path, opset: int,
               names: tuple[list[str], list[str]]) -> None:
    """Export ``model`` to the ONNX file ``path`` (dynamic batch) and check it."""
    inputs, outs = names
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r"You are using the legacy TorchScript-based ONNX")
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r"The feature will be removed", module=r"torch\.onnx")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=opset,
                          input_names=inputs, output_names=outs,
                          dynamic_axes={n: {0: "batch"} for n in inputs + outs})
    onnx.checker.check_model(str(path))


def export_program(model: nn.Module, example_inputs: Any, path: str | Path) -> Path:
    """``torch.export`` with a dynamic batch dim, saved as a ``.pt2`` file.

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
    args = tuple(a.repeat(2, *[1] * (a.dim() - 1)) if isinstance(a, torch.Tensor)
                 and a.dim() and a.shape[0] == 1 else a
                 for a in positional(example_inputs, "torch.export"))
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() else None
                    for a in args)
    try:
        with inference_model(model) as net:
            program = torch.export.export(net, args, dynamic_shapes=dynamic)
    except Exception as exc:  # export raises many types for unsupported models
        raise SurgeryError(f"torch.export failed: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: torch.export.save(program, str(tmp)))


def compare_onnx(path: str | Path, model: nn.Module, example_inputs: Any) -> float:
    """Run an ONNX file in onnxruntime and PyTorch ``model`` on the same inputs.

    Returns the largest relative error over all outputs: max |onnx - torch| / max |torch|.

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
    args = positional(example_inputs, "compare_onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {f"input{i}": a.numpy() for i, a in enumerate(args)})
    with torch.no_grad():
        want = model(*args)
    want = want if isinstance(want, (tuple, list)) else (want,)
    for g, w in zip(got, want, strict=True):
        if tuple(g.shape) != tuple(w.shape):
            raise SurgeryError(f"{path} gives an output of shape {list(g.shape)}, "
                               f"PyTorch {list(w.shape)}")
    errors = [float((torch.from_numpy(g) - w).abs().max() / w.abs().max().clamp_min(1e-12))
              for g, w in zip(got, want, strict=True)]
    return max(errors)


__all__ = ["compare_onnx", "export_onnx", "export_program", "inference_model"]
