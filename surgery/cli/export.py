"""``surgery export DIR --format onnx|torch-export``: reload a pruned folder and export it."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from surgery.cli.common import parse_shape
from surgery.export import export_onnx, export_program, load
from surgery.zoo import resolve_model

HELP = "reload a folder written by `surgery prune` and export it to ONNX or .pt2"
SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="folder written by `surgery prune --out`")
    p.add_argument("--format", required=True, choices=sorted(SUFFIX))
    p.add_argument("--base", help="the unpruned MODEL (default: the one recorded in plan.json)")
    p.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224")
    p.add_argument("--out", help="output file (default DIR/model.onnx or DIR/model.pt2)")


def run(args: argparse.Namespace) -> None:
    base, default_shape = resolve_model(args.base or base_name(args.dir))
    shape = parse_shape(args.input_shape) if args.input_shape else default_shape
    model = load(args.dir, base.eval()).eval()
    x = torch.randn(*shape)
    out = Path(args.out) if args.out else Path(args.dir) / f"model{SUFFIX[args.format]}"
    (export_onnx if args.format == "onnx" else export_program)(model, x, out)
    weights = Path(args.dir) / "model.safetensors"
    print(f"{weights}: {weights.stat().st_size:,} bytes")
    print(f"wrote {out}: {out.stat().st_size:,} bytes ({args.format}, dynamic batch)")


def base_name(directory: str) -> str:
    """The base model name recorded by ``surgery prune`` in DIR/plan.json."""
    from surgery.export import read_plan
    from surgery.errors import SurgeryError

    _, data = read_plan(directory)
    name = data.get("base")
    if not isinstance(name, str):
        raise SurgeryError(f"{directory}/plan.json records no base model: pass --base MODEL")
    return name
