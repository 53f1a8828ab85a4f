"""Depth + width against width only, at equal MACs: latency kept and accuracy after fine-tuning.

Latency (``--part latency``): each model is pruned to 0.5 and 0.3 of its dense MACs twice,
width only (``Budget(target_macs=T)``) and depth + width (``Budget(target_macs=T, depth=True)``
with blocks ranked by 1 - cos(input, output) on the example input, ``BlockRemoval(0,
"cosine")``); the dense model and the pruned ones are then timed run by run in turn in one
process (``surgery.compare_latency``, 1 thread, CPU eager and optionally onnxruntime), and the
table gives each pruned model's median over the dense median. Weights are random (nothing can
be downloaded here): the importances are not a trained model's, the shapes and the time are.

Accuracy (``--part accuracy``): the accuracy_dynamic setting (ResNet-18-s2 on the bundled MNIST
subset, SGD momentum 0.9, lr 0.05 cosine over all epochs, batch 64): per seed one dense model is
trained for epochs - ft epochs, then pruned to 50% of its MACs both ways (blocks ranked by
1 - cos on 4 training batches) and each copy fine-tuned for the same ft epochs with the same
schedule; the test accuracy of both is recorded.

Usage:
    .venv/bin/python benchmarks/depth.py --part latency --runs 15
    .venv/bin/python benchmarks/depth.py --part accuracy --seeds 3 --epochs 4 --ft-epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torchvision
from _common import markdown_table
from accuracy_dynamic import build, epoch
from transformers import LlamaConfig, LlamaForCausalLM

from surgery import Budget, compare_latency, count_flops, prune
from surgery.atomic import write_text
from surgery.plan.blocks import BlockRemoval
from surgery.recover.data import load_mnist, loaders
from surgery.recover.train import evaluate

HERE = Path(__file__).resolve().parent
KEEPS = (0.5, 0.3)


def latency_models() -> dict:
    """name -> (model, example input, what was reduced from the usual setting)."""
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=1000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=2)).eval()
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=112)
    ids = torch.randint(0, 1000, (1, 64))
    return {
        "resnet50": (torchvision.models.resnet50().eval(), torch.randn(1, 3, 128, 128),
                     "128x128 input"),
        "mobilenet_v2": (torchvision.models.mobilenet_v2().eval(),
                         torch.randn(1, 3, 160, 160), "160x160 input"),
        "vit_b_16": (vit.eval(), torch.randn(1, 3, 112, 112),
                     "timm ViT-B/16 at 112x112 (49 patches)"),
        "llama": (llama, {"input_ids": ids, "use_cache": False},
                  "hidden 512, 8 layers, 8 heads / 2 kv heads, 64 tokens"),
        "llama_mask": (llama, {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                               "use_cache": False},
                       "the same with an attention mask (what the ONNX export needs)"),
    }


def latency_rows(names: list[str], runs: int, backends: list[str], tag: str) -> list[dict]:
    rows = []
    for name, (model, x, note) in latency_models().items():
        if name not in names:
            continue
        dense = count_flops(model, x).total
        for keep in KEEPS:
            target = int(keep * dense)
            t0 = time.perf_counter()
            width = prune(model, x, budget=Budget(target_macs=target))
            depth = prune(model, x, budget=Budget(target_macs=target, depth=True),
                          remove_blocks=BlockRemoval(0, "cosine"))
            plan_s = time.perf_counter() - t0
            for backend in backends:
                load = os.getloadavg()[0]
                lats = compare_latency([model, width.model, depth.model], x, runs=runs,
                                       warmup=3, threads=1, backend=backend)
                rows.append({
                    "model": name, "tag": tag, "setting": note, "keep": keep, "backend": backend,
                    "runs": runs, "load_1min": round(load, 2), "plan_s": round(plan_s, 1),
                    "dense_ms": lats[0].median_ms,
                    "width_ms": lats[1].median_ms, "depth_ms": lats[2].median_ms,
                    "width_macs": count_flops(width.model, x).total / dense,
                    "depth_macs": count_flops(depth.model, x).total / dense,
                    "blocks": depth.plan.removed_blocks})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def accuracy_rows(seeds: range, epochs: int, ft_epochs: int,
                  done: Callable[[list[dict]], None]) -> list[dict]:
    """Both methods per seed (module docstring); ``done(rows)`` after each seed."""
    train_loader, test_loader = loaders(load_mnist(), batch_size=64, seed=0)
    x = torch.zeros(1, 1, 28, 28)
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        train_loader.generator.manual_seed(seed)
        model = build("resnet18-s2")
        dense = count_flops(model, x).total
        target = int(0.5 * dense)
        steps = epochs * len(train_loader)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for _ in range(epochs - ft_epochs):
            epoch(model, opt, sched, train_loader)
        model.eval()
        batches = [b for _, b in zip(range(4), train_loader)]
        state = torch.random.get_rng_state()
        for method in ("width", "depth+width"):
            extra = {} if method == "width" else {
                "remove_blocks": BlockRemoval(0, "cosine", batches)}
            result = prune(model, x, budget=Budget(target_macs=target,
                                                   depth=method != "width"), **extra)
            small = result.model
            torch.random.set_rng_state(state)
            train_loader.generator.manual_seed(seed + 1000)
            ft = torch.optim.SGD(small.parameters(), lr=sched.get_last_lr()[0], momentum=0.9)
            left = ft_epochs * len(train_loader)
            ft_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ft, left)
            for _ in range(ft_epochs):
                epoch(small, ft, ft_sched, train_loader)
            rows.append({"seed": seed, "method": method, "epochs": epochs,
                         "ft_epochs": ft_epochs, "accuracy": evaluate(small, test_loader),
                         "macs_kept": count_flops(small, x).total / dense,
                         "blocks": result.plan.removed_blocks})
            print(json.dumps(rows[-1]), flush=True)
        done(rows)
    return rows


def latency_table(rows: list[dict]) -> str:
    body = [[r["model"], r["backend"], r.get("tag", "run1"), f"{r['keep']:.1f}", f"{r['dense_ms']:.1f}",
             f"{r['width_ms'] / r['dense_ms']:.3f} ({r['width_macs']:.3f})",
             f"{r['depth_ms'] / r['dense_ms']:.3f} ({r['depth_macs']:.3f})",
             str(len(r["blocks"])), f"{r['load_1min']:.1f}"] for r in rows]
    return markdown_table(["model", "backend", "run", "MAC target", "dense ms",
                           "width only: latency kept (MACs kept)",
                           "depth+width: latency kept (MACs kept)", "blocks removed",
                           "load (1 min)"], body)


def accuracy_table(rows: list[dict]) -> str:
    body = []
    for setting in dict.fromkeys((r["epochs"], r["ft_epochs"]) for r in rows):
        for method in ("width", "depth+width"):
            mine = [r for r in rows if r["method"] == method
                    and (r["epochs"], r["ft_epochs"]) == setting]
            acc = [100 * r["accuracy"] for r in mine]
            body += [[f"{setting[0]} ({setting[1]})", method, f"{statistics.mean(acc):.2f}%",
                      " / ".join(f"{a:.1f}" for a in acc),
                      f"{statistics.mean(r['macs_kept'] for r in mine):.3f}",
                      "; ".join(",".join(r["blocks"]) or "-" for r in mine)]] if mine else []
    return markdown_table(["epochs (fine-tune)", "method", "accuracy mean", "per seed",
                           "MACs kept", "blocks removed per seed"], body)


def _key(row: dict) -> tuple:
    return row["model"], row["keep"], row["backend"], row.get("tag", "run1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("latency", "accuracy", "report"), required=True,
                        help="report: rewrite results/depth.md from results/depth.json")
    parser.add_argument("--models", nargs="+",
                        default=["resnet50", "mobilenet_v2", "vit_b_16", "llama"])
    parser.add_argument("--backends", nargs="+", default=["eager"])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--tag", default="run1", help="latency rows of another tag are kept")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+n-1")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--ft-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    out = HERE / "results" / "depth.json"
    if args.part == "latency":
        new = latency_rows(args.models, args.runs, args.backends, args.tag)
        data = json.loads(out.read_text()) if out.exists() else {}  # read after the runs
        done = {_key(r) for r in new}
        data["latency"] = [r for r in data.get("latency", []) if _key(r) not in done] + new
        print(latency_table(data["latency"]))
    elif args.part == "accuracy":
        torch.set_num_threads(args.threads)
        def merge(rows: list[dict]) -> dict:
            data = json.loads(out.read_text()) if out.exists() else {}
            keys = {(r["seed"], r["method"], r["epochs"], r["ft_epochs"]) for r in rows}
            data["accuracy"] = [r for r in data.get("accuracy", []) if (
                r["seed"], r["method"], r["epochs"], r["ft_epochs"]) not in keys] + rows
            write_text(out, json.dumps(data, indent=1))
            return data

        seeds = range(args.first_seed, args.first_seed + args.seeds)
        data = merge(accuracy_rows(seeds, args.epochs, args.ft_epochs, merge))
        print(accuracy_table(data["accuracy"]))
    else:
        data = json.loads(out.read_text())
    if args.part != "report":
        command = "python benchmarks/depth.py " + " ".join(argv if argv is not None
                                                            else sys.argv[1:])
        key = args.tag if args.part == "latency" else \
            f"accuracy {args.epochs} ({args.ft_epochs})"
        data.setdefault("commands", {})[key] = command
    write_text(out, json.dumps(data, indent=1))
    write_text(out.with_suffix(".md"), report(data))
    return 0


def report(data: dict) -> str:
    """results/depth.md: the tables of ``data`` and the commands that made them."""
    lat = data.get("latency", [])
    acc = data.get("accuracy", [])
    text = ["# Depth + width vs width only, at equal MACs", "",
            ("Written by `benchmarks/depth.py` (see its docstring). Latency kept = pruned "
            "median / dense median, timed run by run in turn in one process, 1 thread, CPU; "
            "MACs kept (fvcore) in brackets; load = 1-minute load average of the shared "
            "2-core machine when timed."), ""]
    for tag in dict.fromkeys(r.get("tag", "run1") for r in lat):
        rows = [r for r in lat if r.get("tag", "run1") == tag]
        text += [f"## Latency, {tag}: `{data.get('commands', {}).get(tag, '')}`", "",
                 latency_table(rows), "", "Blocks removed (depth + width):", ""]
        text += [f"- {r['model']} {r['backend']} {r['keep']}: {', '.join(r['blocks'])}"
                 for r in rows]
        text.append("")
    if acc:
        runs = [f"`{c}`" for k, c in data.get("commands", {}).items()
                if k.startswith("accuracy")]
        text += ["## Accuracy, ResNet-18-s2 on the MNIST subset", "",
                 "Commands: " + "; ".join(runs), "", accuracy_table(acc), ""]
    text += [data.get("notes", ""), ""]
    return "\n".join(text)


if __name__ == "__main__":
    raise SystemExit(main())
