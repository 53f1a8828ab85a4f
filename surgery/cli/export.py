"""``surgery export DIR --format onnx|torch-export``: reload a pruned folder and export it.

The base model and input shape default to the ones ``surgery prune`` recorded in DIR/plan.json;
a recorded base must be a built-in model (a folder never makes code run: a ``file.py:factory``
base is given with ``--base``).
An ONNX file is checked by ``onnx.checker`` and, when onnxruntime is installed, run against
PyTorch at batch 1 and 2 (the batch dim is dynamic).

Example:
    $ surgery prune lenet --ratio 0.5 --out out/lenet
    $ surgery export out/lenet --format onnx            # writes out/lenet/model.onnx
    $ surgery export out/lenet --format torch-export    # writes out/lenet/model.pt2
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from surgery.cli.common import add_input_dtype_argument, add_run_arguments
from surgery.cli.outputs import add_force_argument, check_out_file

HELP = "reload a folder written by `surgery prune` and export it to ONNX or .pt2"
DESCRIPTION = """\
Rebuild the pruned model of a folder written by `surgery prune` (its base model and input
shape are read from DIR/plan.json) and export it: ONNX (checked by onnx.checker and, when
onnxruntime is installed, compared with PyTorch at batch 1 and 2) or torch.export (.pt2).
The batch dimension is dynamic in both."""
EPILOG = """\
examples:
  surgery prune lenet --ratio 0.5 --out out/lenet
  surgery export out/lenet --format onnx            # writes out/lenet/model.onnx
  surgery export out/lenet --format torch-export    # writes out/lenet/model.pt2
  surgery export out/r18 --format onnx --out r18.onnx
  surgery export out/llama --format hf --out out/llama-hf   # pruned from hf:DIR
  surgery export out/yolo --format ultralytics --out small.pt  # pruned from yolo:FILE
"""
SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2"}
SUFFIX["hf"] = ""  # a transformers folder (default DIR/hf): surgery.cli.hf_export
SUFFIX["ultralytics"] = ".pt"  # a checkpoint ultralytics.YOLO(path) loads: surgery.io.yolo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="folder written by `surgery prune --out`")
    p.add_argument("--format", required=True, choices=sorted(SUFFIX), help="what to write")
    p.add_argument("--base", help="the unpruned MODEL (default: the one recorded in plan.json)")
    p.add_argument("--input-shape", help="example input shape (default: the recorded one)")
    add_input_dtype_argument(p)
    p.add_argument("--out", help="output file (default DIR/model.onnx or DIR/model.pt2), or "
                   "folder for hf (default DIR/hf)")
    add_force_argument(p)
    add_run_arguments(p, device=False)  # --quiet: export shows no progress; its lines are results


def run(args: argparse.Namespace) -> None:
    import torch

    from surgery.cli.folder import folder_base
    from surgery.io.example_inputs import example_inputs, with_attention_mask
    from surgery.io.export import compare_onnx, export_onnx, export_program
    from surgery.io.saving import WEIGHTS_FILE, load, read_plan_data

    if args.format == "hf":  # a folder for transformers' from_pretrained
        from surgery.cli.hf_export import run_hf
        return run_hf(args)
    data = read_plan_data(args.dir)
    default_out = Path(args.dir) / f"model{SUFFIX[args.format]}"
    # our own file in the folder may be replaced; anything the user names needs --force
    out = check_out_file(args.out or str(default_out), args.force or not args.out)
    base = folder_base(args.dir, data, args.base, args.input_shape)
    shape = base.shape

    def inputs(batch: int) -> object:  # what the model takes (token ids for hf:DIR text models)
        return with_attention_mask(base.model, example_inputs(
            base.model, (batch, *shape[1:]), args.input_dtype))

    torch.manual_seed(0)
    x = inputs(shape[0])
    model = load(args.dir, base.model, example_inputs=x).eval()
    weights = Path(args.dir) / WEIGHTS_FILE
    print(f"{weights}: {weights.stat().st_size:,} bytes")
    if args.format == "onnx":
        export_onnx(model, x, out)
        print(f"wrote {out}: {out.stat().st_size:,} bytes (onnx, dynamic batch, checked)")
        if importlib.util.find_spec("onnxruntime") is not None:
            err = max(compare_onnx(out, model, inputs(b)) for b in (1, 2))
            print(f"onnxruntime vs PyTorch at batch 1 and 2: max relative error {err:.1e}")
    elif args.format == "ultralytics":  # pruned from yolo:FILE
        from surgery.io.yolo import export_ultralytics
        export_ultralytics(model, out)
        print(f"wrote {out}: {out.stat().st_size:,} bytes (ultralytics checkpoint: "
              f"YOLO(path) loads it)")
    else:
        export_program(model, x, out)
        print(f"wrote {out}: {out.stat().st_size:,} bytes (torch.export, dynamic batch)")
