"""Arguments shared by the subcommands: the model, its weights, the example input shape, and
where output may go (``--out``, ``--force``), and the run options (--seed, --device, --quiet)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch
from torch import nn

from surgery.atomic import write_text
from surgery.errors import SurgeryError
from surgery.io.models import load_weights, resolve_model
from surgery.io.safety import MAX_DIMS, check_shape, read_json
from surgery.measure.latency import check_device

_SI = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


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


# Every file the toolkit writes into an output folder: --force replaces these and no others.
OUR_FILES = ("model.safetensors", "plan.json", "model.onnx", "model.pt2", "report.json",
             "report.md", "report.png")


def add_force_argument(p: argparse.ArgumentParser) -> None:
    """--force: replace existing output (only the files the toolkit writes)."""
    p.add_argument("--force", action="store_true",
                   help="replace existing output (clears only the files this tool writes)")


def check_out_folder(text: str, force: bool) -> Path:
    """An output folder: new (its parent must exist), empty, or with ``force`` one whose files
    of ours (``OUR_FILES``) are removed here; other files stay. Never a file or a symlink.

    Example:
        >>> import tempfile
        >>> check_out_folder(tempfile.mkdtemp(), force=False).is_dir()
        True
    """
    out = Path(text)
    if out.is_symlink():
        raise SurgeryError(f"--out {out} is a symbolic link: pass a folder")
    if out.exists() and not out.is_dir():
        raise SurgeryError(f"--out {out} exists and it is a file: pass a folder")
    if not out.exists():
        if not out.parent.is_dir():
            raise SurgeryError(f"--out {out}: folder {out.parent} does not exist")
        return out
    ours = _ours(out)
    if not force and any(out.iterdir()):
        raise SurgeryError(f"--out {out} is not empty: pass --force to replace the files this "
                           f"tool writes there ({', '.join(p.name for p in ours) or 'none yet'})")
    folders = [p.name for p in ours if p.is_dir() and not p.is_symlink()]
    if folders:
        raise SurgeryError(f"--out {out}: {folders[0]} is a folder, not a file of ours")
    return out


def _ours(out: Path) -> list[Path]:
    return [out / n for n in OUR_FILES if (out / n).exists() or (out / n).is_symlink()]


def prepare_out_folder(out: Path, names: tuple[str, ...] = OUR_FILES) -> Path:
    """Make a folder passed by ``check_out_folder`` ready: create it, remove our old files
    (those of ``names``; a symlink among them is removed, never followed).

    Example:
        >>> import tempfile
        >>> prepare_out_folder(Path(tempfile.mkdtemp()) / "new").is_dir()
        True
    """
    out.mkdir(exist_ok=True)
    for path in _ours(out):
        if path.name in names:
            path.unlink()
    return out


def check_out_file(text: str, force: bool) -> Path:
    """An output file: new (its parent must exist), or an existing regular file with ``force``.
    Never a folder and never written through a symlink.

    Example:
        >>> import tempfile
        >>> check_out_file(tempfile.mkdtemp() + "/m.onnx", force=False).name
        'm.onnx'
    """
    out = Path(text)
    if out.is_symlink():
        raise SurgeryError(f"--out {out} is a symbolic link: refusing to write through it")
    if out.is_dir():
        raise SurgeryError(f"--out {out} is a folder: pass a file name")
    if not out.parent.is_dir():
        raise SurgeryError(f"--out {out}: folder {out.parent} does not exist")
    if out.exists() and not force:
        raise SurgeryError(f"--out {out} exists: pass --force to replace it")
    return out


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
    data = read_json(Path(plan_file))
    data["num_classes"] = num_classes
    write_text(plan_file, json.dumps(data, indent=1))
