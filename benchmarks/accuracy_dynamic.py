"""Prune after, during or before training, at equal MACs removed and equal total epochs.

Every method trains for the same --epochs with the same optimizer (SGD, momentum 0.9, lr 0.05,
cosine-annealed over all epochs, batch 64) on the 4,000-image MNIST subset split, and ends at the
same MAC target (global ranking, ``target_macs``, no group losing more than --max-ratio of
its dense channels, default 0.8; rows of earlier runs are kept in the results file):

- ``post`` (post-training): dense for epochs - --ft-epochs, one prune (l1), then fine-tune with the
  optimizer carried (``prune_with_optimizer``); ``post+kd``: the same, fine-tuned with the dense
  model at the prune as teacher (T 4, alpha 0.5, ``surgery.recover.distill``);
- ``during/<criterion>`` (SEVENdyn): ``DynamicPruner``, cubic schedule from the end of epoch 1 to
  the end of epoch epochs - --ft-epochs, pruning every quarter epoch, then the same fine-tune
  epochs at the final size;
- ``at-init`` (SEVENpre): ``prune_at_init`` with seven scores from 8 batches, then all epochs.

Seeds 0..n-1 (model init and batch order); the table gives mean and spread (min..max).

Models: ``lenet`` (70% of MACs removed); ``resnet18`` (torchvision ResNet-18 with a 3x3 stride-1
stem and no max-pool, layer1 at 28x28) and ``resnet18-s2`` (the same with a stride-2 stem, layer1
at 14x14: a quarter of the MACs, so 8 epochs take ~8 min per run on 2 CPU cores),
both 50% removed. Results are saved after every run.

Usage:
    .venv/bin/python benchmarks/accuracy_dynamic.py --models lenet --seeds 3
    .venv/bin/python benchmarks/accuracy_dynamic.py --models resnet18-s2 --seeds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from _common import markdown_table, write_marked_section
from accuracy import resnet18_mnist
from torch import nn

from surgery import Budget
from surgery.atomic import write_atomic, write_text
from surgery.io.models import LeNet
from surgery.measure.flops import count_flops
from surgery.recover.at_init import prune_at_init
from surgery.recover.data import load_mnist, loaders
from surgery.recover.distill import distill_loss
from surgery.recover.dynamic import DynamicPruner
from surgery.recover.optim_state import prune_with_optimizer
from surgery.recover.train import evaluate

HERE = Path(__file__).resolve().parent
X = torch.zeros(1, 1, 28, 28)
KEEP = {"lenet": 0.30, "resnet18": 0.50, "resnet18-s2": 0.50}  # MACs kept: 70% / 50% removed
METHODS = ("post", "post+kd", "during/seven", "during/taylor", "during/l1", "at-init")


def build(name: str) -> nn.Module:
    """LeNet; ResNet-18 for 28x28 (stride-1 stem, layer1 at 28x28); or "resnet18-s2", the same
    ResNet-18 with a stride-2 stem (layer1 at 14x14, a quarter of the MACs: the 8-epoch matrix
    fits a CPU)."""
    if name == "lenet":
        return LeNet()
    model = resnet18_mnist()
    if name == "resnet18-s2":
        model.conv1.stride = (2, 2)
    return model


def epoch(model, opt, sched, loader, pruner=None, loss_fn=None) -> None:
    model.train()
    for images, labels in loader:
        net = pruner.model if pruner else model
        opt.zero_grad(set_to_none=True)
        logits = net(images)
        loss = loss_fn(logits, labels, images) if loss_fn else \
            nn.functional.cross_entropy(logits, labels)
        loss.backward()
        opt.step()
        if pruner:
            pruner.step()
        sched.step()


def run(model_name: str, method: str, seed: int, epochs: int, ft_epochs: int,
        train_loader, test_loader, max_ratio: float = 1.0) -> dict:
    torch.manual_seed(seed)
    train_loader.generator.manual_seed(seed)
    model = build(model_name)
    target = int(KEEP[model_name] * count_flops(model, X).total)
    per_epoch = len(train_loader)
    if method == "at-init":
        prune_at_init(model, X, train_loader, "seven", inplace=True,
                      budget=Budget(target_macs=target, global_ranking=True,
                                    max_ratio=max_ratio))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * per_epoch)
    pruner = None
    if method.startswith("during/"):
        pruner = DynamicPruner(model, X, opt, target_macs=target, importance=method[7:],
                               start=per_epoch, end=(epochs - ft_epochs) * per_epoch,
                               every=max(per_epoch // 4, 1), scheduler=sched,
                               global_ranking=True, max_ratio=max_ratio)
    loss_fn = None
    for e in range(epochs):
        if method.startswith("post") and e == epochs - ft_epochs:
            teacher = copy.deepcopy(model).eval()
            prune_with_optimizer(model, X, opt, importance="l1",
                                 budget=Budget(target_macs=target, global_ranking=True,
                                               max_ratio=max_ratio))
            loss_fn = distill_loss(teacher) if method == "post+kd" else None
        epoch(model, opt, sched, train_loader, pruner, loss_fn)
    return {"model": model_name, "method": method, "seed": seed, "max_ratio": max_ratio,
            "epochs": epochs, "ft_epochs": ft_epochs,
            "macs_kept": count_flops(model, X).total / count_flops(build(model_name), X).total,
            "accuracy": evaluate(model, test_loader)}


def _setting(r: dict) -> tuple:
    """(model, max ratio, epochs, fine-tune epochs) of a row (rows saved before these were
    recorded: 8 and 3)."""
    return r["model"], r.get("max_ratio", 1.0), r.get("epochs", 8), r.get("ft_epochs", 3)


def _run_key(r: dict) -> tuple:
    return _setting(r) + (r["method"], r["seed"])


def summarise(rows: list[dict]) -> str:
    header = ["model", "max ratio", "epochs (fine-tune)", "method", "MACs removed",
              "accuracy mean", "spread (min..max)", "seeds"]
    body = []
    for setting in dict.fromkeys(_setting(r) for r in rows):
        model, cap, epochs, ft = setting
        for method in METHODS:
            mine = [r for r in rows if _setting(r) == setting and r["method"] == method]
            if not mine:
                continue
            acc = [r["accuracy"] * 100 for r in mine]
            removed = statistics.mean(1 - r["macs_kept"] for r in mine)
            body.append([model, f"{cap:g}", f"{epochs} ({ft})", method, f"{removed:.1%}",
                         f"{statistics.mean(acc):.2f}%", f"{min(acc):.1f}..{max(acc):.1f}",
                         str(len(mine))])
    return (markdown_table(header, body) + "\n\nEvery method of a row's setting trains the "
            "same epochs in total; post-training prunes after epochs - fine-tune and "
            "fine-tunes the rest; during-training prunes (cubic) from epoch 1 to epochs - "
            "fine-tune.\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(_setting(r) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4), squeeze=False)
    for ax, setting in zip(axes[0], panels):
        model, cap = setting[:2]
        for i, method in enumerate(METHODS):
            acc = [r["accuracy"] * 100 for r in rows if _setting(r) == setting
                   and r["method"] == method]
            ax.scatter([i] * len(acc), acc, alpha=0.6)
            if acc:
                ax.plot([i - 0.2, i + 0.2], [statistics.mean(acc)] * 2, color="k")
        ax.set_xticks(range(len(METHODS)), METHODS, rotation=20)
        ax.set(title=f"{model}: {1 - KEEP[model]:.0%} MACs removed, max ratio {cap:g}, "
                     f"{setting[2]} epochs",
               ylabel="test accuracy (%)")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet"], choices=sorted(KEEP))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+n-1")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--ft-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-ratio", type=float, default=0.8,
                        help="the most of one group's channels any method removes; rows of "
                        "other runs (model, max ratio, epochs, method, seed) in the results "
                        "file are kept")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_loader, test_loader = loaders(load_mnist(), batch_size=64, seed=0)
    rows, table = [], "(no runs)"
    for model in args.models:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for method in args.methods:
                t0 = time.perf_counter()
                rows.append(run(model, method, seed, args.epochs, args.ft_epochs,
                                train_loader, test_loader, args.max_ratio))
                print(f"{model} {method:14s} seed {seed}: {rows[-1]['accuracy']:.2%} "
                      f"(MACs kept {rows[-1]['macs_kept']:.1%}, "
                      f"{time.perf_counter() - t0:.0f} s)", flush=True)
                table = save(rows)  # after every run: a run stopped half-way keeps its rows
    print(table)
    return 0


def save(rows: list[dict]) -> str:
    """Merge ``rows`` into results/accuracy_dynamic.json (replacing earlier rows of the same
    run), redraw the plot and RESULTS.md's section; returns the table."""
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / "accuracy_dynamic.json"
    earlier = json.loads(path.read_text()) if path.exists() else []
    mine = {_run_key(r) for r in rows}
    rows = [r for r in earlier if _run_key(r) not in mine] + rows
    write_text(path, json.dumps(rows, indent=1))
    plot(rows, out / "accuracy_dynamic.png")
    table = summarise(rows)
    section = ("## Prune after, during or before training (MNIST subset)\n\nWritten by "
               "`benchmarks/accuracy_dynamic.py` (see its docstring). Test set 1,000 images "
               "(1 image = 0.1 pp).\n\n" + table +
               "\n![accuracy_dynamic](results/accuracy_dynamic.png)\n")
    write_marked_section(HERE / "RESULTS.md", "accuracy_dynamic", section)
    return table


if __name__ == "__main__":
    raise SystemExit(main())
