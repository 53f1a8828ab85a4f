"""``make demo``: train LeNet on the bundled MNIST subset, prune it, fine-tune, measure, export.

Prints accuracy dense -> pruned -> fine-tuned, parameters, MACs and CPU latency before and after.
Then prunes an (untrained) torchvision ResNet-18 at a 32x32 input, writes both pruned models with
``surgery.io.saving.save`` (``out/demo/lenet``, ``out/demo/resnet18``: model.safetensors +
plan.json), exports dense and pruned ONNX files of both to ``out/demo``, checks each in
onnxruntime against PyTorch and prints their sizes on disk. Runs offline in a few minutes.
An example of the library, not part of it: run it from the repository root.

Example:
    $ python examples/demo.py --ratio 0.5 --epochs 3
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from tqdm import tqdm

from surgery import PruneResult, SurgeryError, count_flops, measure_latency, prune, save
from surgery.io.export import compare_onnx, export_onnx
from surgery.io.models import LeNet
from surgery.recover.data import load_mnist, loaders
from surgery.recover.train import evaluate, finetune, train

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
                            unit="file", leave=False, disable=not sys.stderr.isatty()):
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


def run(ratio: float, epochs: int, finetune_epochs: int, out: Path) -> dict:
    """Train, prune, fine-tune and measure LeNet; save it to ``out/lenet``; the numbers."""
    torch.manual_seed(0)
    train_loader, test_loader = loaders(load_mnist(), batch_size=64)
    x = torch.zeros(1, 1, 28, 28)
    bars = sys.stderr.isatty()  # progress bars on a terminal only, not in logs
    # training: a bar per epoch on a terminal, else one line per epoch (progress=None)
    model = train(LeNet(), train_loader, epochs=epochs, seed=0, progress=None)
    dense_acc = evaluate(model, test_loader)
    result = prune(model, x, ratio=ratio)
    print(f"lenet      ratio {ratio}: {result.summary()}")
    pruned_acc = evaluate(result.model, test_loader)
    finetune(result.model, train_loader, epochs=finetune_epochs, seed=1, progress=None)
    tuned_acc = evaluate(result.model, test_loader)
    macs = (count_flops(model, x).total, count_flops(result.model, x).total)
    lat = [measure_latency(m, x, runs=200, warmup=20, threads=1, progress=bars).median_ms
           for m in (model, result.model)]
    save(result, out / "lenet", base="lenet", input_shape=x.shape, overwrite=True)  # ours
    return {"accuracy": (dense_acc, pruned_acc, tuned_acc), "macs": macs, "latency_ms": lat,
            "params": (result.params_before, result.params_after),
            "models": (model, result.model, x)}


def export_all(lenet: tuple, ratio: float, out: Path) -> str:
    """Prune ResNet-18, save it, export dense and pruned LeNet and ResNet-18; the size table."""
    dense, result, x = prune_resnet18(ratio)
    print(f"resnet18   ratio {ratio}: {result.summary()}")
    save(result, out / "resnet18", base="resnet18", input_shape=x.shape, overwrite=True)
    rows = [export_pair("lenet", *lenet, out),
            export_pair("resnet18", dense, result.model, x, out)]
    return size_table(rows)


def report(r: dict) -> str:
    """The LeNet numbers of ``run()``, one line per measure."""
    (dense, pruned, tuned), (m0, m1), (l0, l1), (p0, p1) = (
        r["accuracy"], r["macs"], r["latency_ms"], r["params"])
    return "\n".join([
        f"accuracy   dense {dense:.2%} -> pruned {pruned:.2%} -> fine-tuned {tuned:.2%}",
        f"params     {p0:,} -> {p1:,} ({p1 / p0:.1%} kept)",
        f"MACs       {m0:,} -> {m1:,} ({m1 / m0:.1%} kept)",
        f"latency    {l0:.3f} ms -> {l1:.3f} ms ({l1 / l0:.1%} kept; CPU, 1 thread, median)",
    ])


def main(argv: list[str] | None = None) -> int:
    """Run the whole demo; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ratio", type=float, default=0.5,
                        help="fraction of each group's channels to remove")
    parser.add_argument("--epochs", type=int, default=3, help="LeNet training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--out", default="out/demo")
    args = parser.parse_args(argv)
    out = Path(args.out)
    print(f"demo: train LeNet on MNIST ({args.epochs} epochs), prune every channel group at "
          f"ratio {args.ratio}, fine-tune {args.finetune_epochs} epochs, measure, export")
    results = run(args.ratio, args.epochs, args.finetune_epochs, out)
    print(report(results))
    table = export_all(results["models"], args.ratio, out)
    print(f"wrote {out}/lenet and {out}/resnet18 (model.safetensors + plan.json)")
    print(f"ONNX files in {out} (dynamic batch; checked in onnxruntime at batch 1 and 4):")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
