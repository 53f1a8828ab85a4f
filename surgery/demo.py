"""``make demo``: train LeNet on the bundled MNIST subset, prune it, fine-tune, measure, export.

Prints accuracy dense -> pruned -> fine-tuned, parameters, MACs and CPU latency before and after.
Then prunes an (untrained) torchvision ResNet-18 at a 32x32 input, writes both pruned models with
``surgery.saving.save`` (``out/demo/lenet``, ``out/demo/resnet18``: model.safetensors +
plan.json), exports dense and pruned ONNX files of both to ``out/demo``, checks each in
onnxruntime against PyTorch and prints their sizes on disk. Runs offline in a few minutes.

Example:
    $ python -m surgery.demo --ratio 0.5 --epochs 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from surgery.data import load_mnist, loaders
from surgery.demo_export import export_pair, prune_resnet18, size_table
from surgery.flops import count_flops
from surgery.latency import measure_latency
from surgery.prune import prune
from surgery.saving import save
from surgery.train import evaluate, finetune, train
from surgery.zoo import LeNet


def run(ratio: float, epochs: int, finetune_epochs: int, out: Path) -> dict:
    """Train, prune, fine-tune and measure LeNet; save it to ``out/lenet``; the numbers."""
    torch.manual_seed(0)
    train_loader, test_loader = loaders(load_mnist(), batch_size=64)
    x = torch.zeros(1, 1, 28, 28)
    model = train(LeNet(), train_loader, epochs=epochs, seed=0)
    dense_acc = evaluate(model, test_loader)
    result = prune(model, x, ratio=ratio)
    print(result.graph)
    pruned_acc = evaluate(result.model, test_loader)
    finetune(result.model, train_loader, epochs=finetune_epochs, seed=1)
    tuned_acc = evaluate(result.model, test_loader)
    macs = (count_flops(model, x).total, count_flops(result.model, x).total)
    lat = [measure_latency(m, x, runs=200, warmup=20, threads=1, progress=True).median_ms
           for m in (model, result.model)]
    save(result, out / "lenet", base="lenet", input_shape=x.shape)
    return {"accuracy": (dense_acc, pruned_acc, tuned_acc), "macs": macs, "latency_ms": lat,
            "params": (result.params_before, result.params_after),
            "models": (model, result.model, x)}


def export_all(lenet: tuple, ratio: float, out: Path) -> str:
    """Prune ResNet-18, save it, export dense and pruned LeNet and ResNet-18; the size table."""
    dense, result, x = prune_resnet18(ratio)
    print(f"resnet18   {result.summary()}")
    save(result, out / "resnet18", base="resnet18", input_shape=x.shape)
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--out", default="out/demo")
    args = parser.parse_args(argv)
    out = Path(args.out)
    results = run(args.ratio, args.epochs, args.finetune_epochs, out)
    print(report(results))
    table = export_all(results["models"], args.ratio, out)
    print(f"wrote {out}/lenet and {out}/resnet18 (model.safetensors + plan.json)")
    print(f"ONNX files in {out} (dynamic batch; checked in onnxruntime at batch 1 and 4):")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
