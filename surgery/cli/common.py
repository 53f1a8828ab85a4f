"""Arguments shared by the subcommands: the model, its weights, the example input shape, and
the run options (--seed, --device, --quiet)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch
from torch import nn

from surgery.errors import SurgeryError
from surgery.io.models import load_weights, resolve_model
from surgery.measure.latency import check_device

_SI = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``; anything else raises SurgeryError.

    Example:
        >>> parse_shape("1,3,32,32")
        (1, 3, 32, 32)
    """
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise SurgeryError(f"--input-shape must be comma-separated integers like 1,3,224,224, "
                           f"got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise SurgeryError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def parse_count(text: str) -> int:
    """``"1.5G"`` -> 1_500_000_000; ``"800M"``, ``"12e9"``, ``"8000000000"`` (SI prefixes K, M,
    G, T; a trailing "MACs" is allowed); anything else raises SurgeryError.

    Example:
        >>> parse_count("1.5G"), parse_count("800M"), parse_count("12e9"), parse_count("250k")
        (1500000000, 800000000, 12000000000, 250000)
    """
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kKmMgGtT]?)(?:MACs?)?\s*", text)
    try:
        value = float(match.group(1)) * _SI[match.group(2).upper()] if match else -1.0
    except ValueError:
        value = -1.0
    if value < 1:
        raise SurgeryError(f"expected a positive count like 1.5G, 800M or 8000000000, "
                           f"got {text!r}")
    return round(value)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL, --input-shape, --weights, --num-classes, --ignore and --seed."""
    p.add_argument("model", help="lenet, a torchvision model name (resnet18), timm:NAME "
                   "(timm:convnext_atto), or path/to/file.py:factory")
    p.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224 "
                   "(default: the model's own, 1,3,224,224 for torchvision)")
    p.add_argument("--weights", help="state dict or checkpoint (.safetensors or torch.save)")
    p.add_argument("--num-classes", type=int,
                   help="classifier outputs of a torchvision/timm model (default: its own)")
    p.add_argument("--ignore", nargs="*", default=[], help="layers whose outputs stay")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random example input")


def add_run_arguments(p: argparse.ArgumentParser, device: bool = True) -> None:
    """--device (if ``device``) and --quiet."""
    if device:
        p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quiet", action="store_true",
                   help="print only results and errors, no progress bars")


def progress_bars(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: not --quiet/--no-progress, and stderr is a terminal."""
    off = getattr(args, "quiet", False) or getattr(args, "no_progress", False)
    return not off and sys.stderr.isatty()


def model_and_input(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor]:
    """The model named by ``args.model`` (weights loaded, eval mode, on ``--device``) and a
    random example input drawn with ``--seed``."""
    model, default_shape = resolve_model(args.model, getattr(args, "num_classes", None))
    if getattr(args, "weights", None):
        load_weights(model, args.weights)
    shape = parse_shape(args.input_shape) if args.input_shape else default_shape
    torch.manual_seed(getattr(args, "seed", 0))
    device = check_device(getattr(args, "device", "cpu"))
    return model.eval().to(device), torch.randn(*shape).to(device)


def record_num_classes(plan_file: str | Path, num_classes: int | None) -> None:
    """Add ``num_classes`` to a plan.json written by ``save`` (so export/finetune rebuild the
    same base model)."""
    if num_classes is None:
        return
    path = Path(plan_file)
    data = json.loads(path.read_text())
    data["num_classes"] = num_classes
    path.write_text(json.dumps(data, indent=1))
