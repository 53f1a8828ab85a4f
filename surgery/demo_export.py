"""The export half of ``make demo``: ONNX files of dense and pruned models, checked and sized.

Example:
    >>> import tempfile, torch
    >>> from surgery import prune
    >>> from surgery.zoo import LeNet
    >>> dense, x = LeNet().eval(), torch.zeros(1, 1, 28, 28)
    >>> pruned = prune(dense, x, ratio=0.5).model
    >>> row = export_pair("lenet", dense, pruned, x, Path(tempfile.mkdtemp()))
    >>> row.pruned_bytes < row.dense_bytes and row.max_rel_err <= 1e-4
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from tqdm import tqdm

from surgery.errors import SurgeryError
from surgery.export import compare_onnx, export_onnx
from surgery.prune import PruneResult, prune

RESNET_INPUT = (1, 3, 32, 32)


@dataclass(frozen=True)
class SizeRow:
    """One model's ONNX files: sizes on disk and the onnxruntime-vs-PyTorch check."""

    model: str
    dense_bytes: int
    pruned_bytes: int
    max_rel_err: float


def export_pair(name: str, dense: nn.Module, pruned: nn.Module, x: torch.Tensor,
                out: Path) -> SizeRow:
    """Write ``out/{name}-dense.onnx`` and ``-pruned.onnx``; check both at batch 1 and 4.

    Raises SurgeryError if onnxruntime and PyTorch differ by more than 1e-4 (relative).
    """
    sizes, errors = [], []
    for kind, model in tqdm((("dense", dense), ("pruned", pruned)), desc=f"ONNX {name}",
                            unit="file", leave=False):
        path = export_onnx(model.eval(), x, out / f"{name}-{kind}.onnx")
        sizes.append(path.stat().st_size)
        errors += [compare_onnx(path, model, torch.randn(b, *x.shape[1:])) for b in (1, 4)]
    if max(errors) > 1e-4:
        raise SurgeryError(f"{name}: onnxruntime differs from PyTorch by {max(errors):.1e}")
    return SizeRow(name, sizes[0], sizes[1], max(errors))


def prune_resnet18(ratio: float) -> tuple[nn.Module, PruneResult, torch.Tensor]:
    """Untrained torchvision ResNet-18 (seed 0), pruned at a 1x3x32x32 input.

    Example:
        >>> dense, result, x = prune_resnet18(0.5)
        >>> result.model.conv1.out_channels, tuple(x.shape)
        (32, (1, 3, 32, 32))
    """
    torch.manual_seed(0)
    dense = torchvision.models.resnet18(weights=None).eval()
    x = torch.zeros(RESNET_INPUT)
    return dense, prune(dense, x, ratio=ratio), x


def human(n: int) -> str:
    """Bytes as B / KB / MB (powers of 1000).

    Example:
        >>> human(512), human(245_000), human(46_800_000)
        ('512 B', '245.0 KB', '46.8 MB')
    """
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def size_table(rows: list[SizeRow]) -> str:
    """A plain-text table: model, ONNX size dense and pruned, ratio, onnxruntime check.

    Example:
        >>> print(size_table([SizeRow("lenet", 250_000, 70_000, 2e-7)]))
        model     ONNX dense               ONNX pruned              pruned/dense  max rel err (ORT)
        lenet     250,000 B (250.0 KB)     70,000 B (70.0 KB)              28.0%  2.0e-07
    """
    header = (f"{'model':<9} {'ONNX dense':<24} {'ONNX pruned':<24} {'pruned/dense':>12}  "
              f"max rel err (ORT)")
    lines = [header]
    for r in rows:
        dense = f"{r.dense_bytes:,} B ({human(r.dense_bytes)})"
        pruned = f"{r.pruned_bytes:,} B ({human(r.pruned_bytes)})"
        lines.append(f"{r.model:<9} {dense:<24} {pruned:<24} "
                     f"{r.pruned_bytes / r.dense_bytes:>12.1%}  {r.max_rel_err:.1e}")
    return "\n".join(lines)
