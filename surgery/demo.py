"""``make demo``: train LeNet on the bundled MNIST subset, prune it, fine-tune, and measure.

Prints accuracy dense -> pruned -> fine-tuned, parameters, MACs and CPU latency before and after,
and writes the pruned weights and plan to ``out/demo``. Runs offline in about a minute on 2 cores.

Example:
    $ python -m surgery.demo --ratio 0.5 --epochs 3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from surgery.data import load_mnist, loaders
from surgery.flops import count_flops
from surgery.latency import measure_latency
from surgery.prune import prune
from surgery.train import evaluate, finetune, train
from surgery.zoo import LeNet


def run(ratio: float, epochs: int, finetune_epochs: int, out: Path) -> dict:
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
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()},
              str(out / "model.safetensors"))
    (out / "plan.json").write_text(json.dumps(result.plan.to_json(), indent=1))
    return {"accuracy": (dense_acc, pruned_acc, tuned_acc), "macs": macs, "latency_ms": lat,
            "params": (result.params_before, result.params_after)}


def report(r: dict) -> str:
    (dense, pruned, tuned), (m0, m1), (l0, l1), (p0, p1) = (
        r["accuracy"], r["macs"], r["latency_ms"], r["params"])
    return "\n".join([
        f"accuracy   dense {dense:.2%} -> pruned {pruned:.2%} -> fine-tuned {tuned:.2%}",
        f"params     {p0:,} -> {p1:,} ({p1 / p0:.1%} kept)",
        f"MACs       {m0:,} -> {m1:,} ({m1 / m0:.1%} kept)",
        f"latency    {l0:.3f} ms -> {l1:.3f} ms ({l1 / l0:.1%} kept; CPU, 1 thread, median)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--out", default="out/demo")
    args = parser.parse_args(argv)
    print(report(run(args.ratio, args.epochs, args.finetune_epochs, Path(args.out))))
    print(f"wrote {args.out}/model.safetensors and {args.out}/plan.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
