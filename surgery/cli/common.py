"""Arguments shared by the subcommands: the model, its weights and the example input shape."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from surgery.errors import SurgeryError
from surgery.io.models import load_weights, resolve_model


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``; anything else raises SurgeryError.

    Example:
        >>> parse_shape("1,3,32,32")
        (1, 3, 32, 32)
    """
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise SurgeryError(f"--input-shape must be comma-separated integers like 1,3,224,224, "
                           f"got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise SurgeryError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL, --input-shape, --weights and --ignore."""
    p.add_argument("model", help="lenet, a torchvision model name, or path/to/file.py:factory")
    p.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224")
    p.add_argument("--weights", help="state dict (.safetensors or torch.save, weights only)")
    p.add_argument("--ignore", nargs="*", default=[], help="layers whose outputs stay")


def model_and_input(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor]:
    """The model named by ``args.model`` (weights loaded, eval mode) and a random example input."""
    model, default_shape = resolve_model(args.model)
    if getattr(args, "weights", None):
        load_weights(model, args.weights)
    shape = parse_shape(args.input_shape) if args.input_shape else default_shape
    return model.eval(), torch.randn(*shape)
