"""Arguments shared by the subcommands: the model, its weights, the example input shape, the
run options (--seed, --device, --quiet), and argparse types for numbers that must be finite and
in range (``integer``, ``number``). Where output may go is ``surgery.cli.outputs``."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from surgery.atomic import write_text
from surgery.errors import SurgeryError
from surgery.io.safety import MAX_DIMS, check_shape, read_json
from surgery.progress import BAR, LINES, OFF

if TYPE_CHECKING:  # the command line imports torch only to run a command, not for --help
    import torch
    from torch import nn

_SI = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
MAX_COUNT = 10**18  # --target-macs
MAX_SEED = 2**31 - 1
CPUS = os.cpu_count() or 1  # --threads at most this many
# surgery.measure.latency.BACKENDS, for --backend's choices without importing torch (a test
# checks that they agree)
BACKENDS = ("eager", "compile", "onnxruntime")


def integer(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high``, else a one-line error.

    Example:
        >>> integer(1, 8)("4")
        4
        >>> integer(1, 8)("9")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: must be an integer from 1 to 8, got '9'
    """
    def parse(text: str) -> int:
        try:
            value = int(text) if len(text) <= 24 else None
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low:,} to {high:,}, "
                                             f"got {text[:40]!r}")
        return value
    return parse


def number(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[low, high]`` (``(low, high]`` if
    ``low_open``); NaN, infinities and 1e999 are refused in one line.

    Example:
        >>> number(0, 1, low_open=True)("0.5")
        0.5
        >>> number(0, 1, low_open=True)("nan")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: must be a number > 0 and <= 1, got 'nan'
    """
    def parse(text: str) -> float:
        try:
            value = float(text) if len(text) <= 40 else math.nan
        except ValueError:
            value = math.nan
        if not (low < value if low_open else low <= value) or not value <= high:
            raise argparse.ArgumentTypeError(f"must be a number {'>' if low_open else '>='} "
                                             f"{low:g} and <= {high:g}, got {text[:40]!r}")
        return value
    return parse


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``; anything else raises SurgeryError.

    Example:
        >>> parse_shape("1,3,32,32")
        (1, 3, 32, 32)
    """
    parts = text.split(",")
    if len(parts) > MAX_DIMS or any(len(p.strip()) > 9 for p in parts):
        raise SurgeryError(f"--input-shape must be at most {MAX_DIMS} integers of at most 9 "
                           f"digits, got {text[:60]!r}")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise SurgeryError(f"--input-shape must be comma-separated integers like 1,3,224,224, "
                           f"got {text!r}") from None
    return check_shape(shape, "--input-shape")


def parse_count(text: str) -> int:
    """``"1.5G"`` -> 1_500_000_000; ``"800M"``, ``"12e9"``, ``"8000000000"`` (SI prefixes K, M,
    G, T; a trailing "MACs" is allowed); anything else raises SurgeryError.

    Example:
        >>> parse_count("1.5G"), parse_count("800M"), parse_count("12e9"), parse_count("250k")
        (1500000000, 800000000, 12000000000, 250000)
    """
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kKmMgGtT]?)(?:MACs?)?\s*", text[:60])
    try:
        value = float(match.group(1)) * _SI[match.group(2).upper()] if match else -1.0
    except ValueError:
        value = -1.0
    if not 1 <= value <= MAX_COUNT:  # also refuses 1e999 (infinity)
        raise SurgeryError(f"expected a positive count like 1.5G, 800M or 8000000000 (at most "
                           f"1e18), got {text[:60]!r}")
    return round(value)


def class_count(text: str) -> int:
    """An argparse ``type`` for --num-classes: an integer from 1 to
    ``surgery.io.models.MAX_CLASSES`` (imported when the option is given, not for --help).

    Example:
        >>> class_count("10")
        10
    """
    from surgery.io.models import MAX_CLASSES
    return integer(1, MAX_CLASSES)(text)


def add_input_dtype_argument(p: argparse.ArgumentParser) -> None:
    """--input-dtype: float inputs or token ids."""
    p.add_argument("--input-dtype", choices=("float", "long"),
                   help="long: random token ids below the vocabulary size (default: float, "
                   "or what an hf:DIR model takes)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL, --input-shape, --weights, --num-classes, --ignore and --seed."""
    p.add_argument("model", help="lenet, a torchvision model name (resnet18), timm:NAME "
                   "(timm:convnext_atto), path/to/file.py:factory, or hf:DIR (a folder "
                   "written by transformers' save_pretrained)")
    p.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224 "
                   "(default: the model's own, 1,3,224,224 for torchvision)")
    add_input_dtype_argument(p)
    p.add_argument("--weights", help="state dict or checkpoint (.safetensors or torch.save; "
                   "default: random initial weights)")
    p.add_argument("--num-classes", type=class_count,
                   help="classifier outputs of a torchvision/timm model (default: its own)")
    p.add_argument("--ignore", nargs="*", default=[], metavar="LAYER",
                   help="layers whose output channels stay (default: none)")
    add_seed_argument(p, "seed of the random example input")


def add_seed_argument(p: argparse.ArgumentParser, what: str) -> None:
    """--seed: an integer from 0 to 2**31 - 1."""
    p.add_argument("--seed", type=integer(0, MAX_SEED), default=0, help=what)


def add_run_arguments(p: argparse.ArgumentParser, device: bool = True) -> None:
    """--device (if ``device``) and --quiet."""
    if device:
        p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quiet", action="store_true",
                   help="print only results, warnings and errors: no progress")


def progress_mode(args: argparse.Namespace) -> str:
    """How long work shows progress (``surgery.progress``): nothing with --quiet, bars on a
    terminal, else (and with --no-progress) one line per step.

    Example:
        >>> progress_mode(argparse.Namespace(quiet=True)), progress_mode(argparse.Namespace(
        ...     quiet=False, no_progress=True))
        ('off', 'lines')
    """
    if getattr(args, "quiet", False):
        return OFF
    return LINES if getattr(args, "no_progress", False) or not sys.stderr.isatty() else BAR


def progress_bars(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: not --quiet/--no-progress, and stderr is a terminal."""
    return progress_mode(args) == BAR


def model_and_input(args: argparse.Namespace, recorded: tuple[int, ...] | None = None,
                    source: str = "") -> tuple[nn.Module, torch.Tensor]:
    """The model named by ``args.model`` (weights loaded, eval mode, on ``--device``) and a
    random example input drawn with ``--seed``: of ``--input-shape``, else of ``recorded``
    (read from ``source``, its cost bounded by ``check_input_cost``), else the model's own."""
    import torch

    from surgery.io.bases import check_input_cost
    from surgery.io.example_inputs import example_inputs
    from surgery.io.models import load_weights, resolve_model
    from surgery.measure.latency import check_device
    device = check_device(getattr(args, "device", "cpu"))
    model, default_shape = resolve_model(args.model, getattr(args, "num_classes", None))
    if getattr(args, "weights", None):
        load_weights(model, args.weights)
    if args.input_shape:
        shape = parse_shape(args.input_shape)
    elif recorded is not None:
        shape = check_input_cost(model, recorded, f"{source} input_shape")
    else:
        shape = default_shape
    torch.manual_seed(getattr(args, "seed", 0))
    model = model.eval().to(device)
    return model, example_inputs(model, shape, getattr(args, "input_dtype", None), device)


def check_output(model: nn.Module, x: torch.Tensor, name: str, failures: bool = True) -> None:
    """Raise SurgeryError unless ``model`` runs on ``x`` and returns tensors (a tensor, or a
    tuple, list or dict of tensors and Nones), so that counting, timing or pruning it cannot
    fail halfway. ``failures=False`` lets a forward that raises pass (the tracer reports it
    later, with its source line).

    Example:
        >>> from surgery.io.models import LeNet
        >>> import torch
        >>> check_output(LeNet(), torch.zeros(1, 1, 28, 28), "lenet")
    """
    import torch

    from graphs.inputs import call_model
    try:
        with torch.no_grad():
            out = call_model(model, x)  # a tensor, or keyword inputs (token ids)
    except Exception as exc:  # a model's forward may raise anything on a wrong input
        if not failures:
            return
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        where = f"input shape {list(x.shape)}" if isinstance(x, torch.Tensor) else \
            "its example inputs"
        raise SurgeryError(f"{name} fails on {where} "
                           f"({type(exc).__name__}: {first}): pass the --input-shape it "
                           f"takes") from exc
    values = list(out.values()) if isinstance(out, dict) else \
        list(out) if isinstance(out, (tuple, list)) else [out]
    if not any(isinstance(v, torch.Tensor) for v in values) or \
            not all(v is None or isinstance(v, torch.Tensor) for v in values):
        kinds = sorted({type(v).__name__ for v in values})
        raise SurgeryError(f"{name} returns {type(out).__name__} ({', '.join(kinds)}): only "
                           f"models that return tensors can be measured")


def check_trained(model: nn.Module) -> None:
    """Raise SurgeryError if training left a NaN or infinite weight (nothing is written then).

    Example:
        >>> import torch
        >>> check_trained(torch.nn.Linear(2, 2))
    """
    import torch
    bad = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()),
               None)
    if bad is not None:
        raise SurgeryError(f"training diverged: {bad} holds NaN or infinite values, so nothing "
                           f"is written; try a lower --lr")


def record_num_classes(plan_file: str | Path, num_classes: int | None) -> None:
    """Add ``num_classes`` to a plan.json written by ``save`` (so export/finetune rebuild the
    same base model)."""
    if num_classes is None:
        return
    data = read_json(Path(plan_file))
    data["num_classes"] = num_classes
    write_text(plan_file, json.dumps(data, indent=1))
